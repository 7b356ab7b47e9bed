"""Write benchmark results: results.csv, results.png and results.md with the machine's description.

results.md also lists published Apple Silicon figures for the same ResNet50
CIFAR-100 training setup, next to the ones measured here, with their sources.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
from pathlib import Path

CSV_NAME = "results.csv"
PLOT_NAME = "results.png"
MARKDOWN_NAME = "results.md"

CSV_COLUMNS = ("benchmark", "method", "framework", "device", "batch_size", "metric", "unit", "median", "min", "max", "runs", "values")

# The metric each benchmark's plot panel and table show.
PRIMARY_METRICS = {
    "resnet_tf": ("train_images_per_second", "ResNet50 training, TensorFlow", "images per second"),
    "distilgpt2": ("train_useful_tokens_per_second", "distilgpt2 training", "useful tokens per second"),
    "resnet_torch": ("latency_ms", "ResNet-50 inference, torch", "latency per batch (ms)"),
}

MAC_ML_SPEED_TEST = "https://github.com/mrdbourke/mac-ml-speed-test/blob"
MAC_ML_SPEED_TEST_SCRIPT = f"{MAC_ML_SPEED_TEST}/b60ddef6909f9ec2c139e8a04e530732cf72fd00/tensorflow_test_computer_vision_cifar100.py"
CIFAR100_TRAIN_IMAGES = 50000

# Mean seconds per epoch of tf.keras.applications.ResNet50(weights=None,
# input_shape=(32, 32, 3), classes=100) compiled with adam and
# SparseCategoricalCrossentropy, fitted for 5 epochs on the 50000 CIFAR-100
# training images (mac-ml-speed-test's tensorflow_test_computer_vision_cifar100.py),
# copied from the result files at these commits. chip -> (file, {batch size: seconds}).
PUBLISHED_RESNET_TF = {
    "Apple M1 Pro (16 GB)": (
        "0d9ec268409446ac56c8cd4f4591317181bf546f/results/results_tensorflow_cv/Apple_M1_Pro_16GB_CIFAR100_ResNet50_32_tensorflow_results.csv",
        {16: 205.14151764179115, 32: 114.19485149160028, 64: 64.02524264161475, 128: 51.725963208405304,
         256: 49.920038400008345, 512: 47.91459840000607, 1024: 48.901884791604246},
    ),
    "Apple M3": (
        "013c7b72eaea0fe80bcbec952c94a438b9fe2c98/results/results_tensorflow_cv/Apple_M3_CIFAR100_ResNet50_32_tensorflow_results.csv",
        {16: 132.78998702500002, 32: 89.12323289179994, 64: 67.47725710819995, 128: 58.35523201680007,
         256: 54.51674566679994, 512: 52.03046636659983, 1024: 51.9580059165999},
    ),
    "Apple M3 Pro": (
        "070bb9e8198eefed67c748ab3c8b1921d3bb40fe/results/results_tensorflow_cv/Apple_M3_Pro_CIFAR100_ResNet50_32_tensorflow_results.csv",
        {16: 149.33609456659997, 32: 81.23528855000004, 64: 49.6020009418, 128: 40.31359892500004,
         256: 37.71170701680003, 512: 36.15389770820002, 1024: 34.848360266599954},
    ),
    "Apple M3 Max": (
        "740cd3c7761029a0f292e8b71aa7f431cb3b4d44/results/results_tensorflow_cv/Apple_M3_Max_CIFAR100_ResNet50_32_tensorflow_results.csv",
        {16: 161.3108821416, 32: 78.47156926660008, 64: 51.766306616599834, 128: 30.707800908399985,
         256: 21.072617524999988, 512: 20.989195516600013, 1024: 25.48777924999995},
    ),
}  # fmt: skip


# --- Machine -----------------------------------------------------------------------------


def load_average() -> float | None:
    """Return the 1-minute load average, or None where the OS has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def memory_bytes() -> int | None:
    """Return the physical memory in bytes (Linux and macOS), or None when the OS does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def describe_machine(load_before: float | None) -> dict:
    """Describe the machine: CPU, cores, memory, OS, versions, torch threads and the load around the run."""
    import sys

    from mlrepro import report

    os_facts = report.os_facts()
    description = {
        "cpu": report.cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "os": f"{os_facts['name']} ({os_facts['system']} {os_facts['release']})",
        "machine": platform.machine(),
        "versions": report.framework_versions(report.installed_versions()),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    if "torch" in sys.modules:
        import torch

        description["torch_threads"] = torch.get_num_threads()
    return description


# --- Files -------------------------------------------------------------------------------


def write_results(output_dir: Path, measurements: list, facts: dict) -> list[Path]:
    """Write results.csv, results.png and results.md into output_dir; return their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    facts = {**facts, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    return [
        write_csv(output_dir / CSV_NAME, measurements),
        plot_results(output_dir / PLOT_NAME, measurements),
        write_markdown(output_dir / MARKDOWN_NAME, measurements, facts),
    ]


def write_csv(path: Path, measurements: list) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_COLUMNS)
        for m in measurements:
            writer.writerow([
                m.benchmark, m.method, m.framework, m.device, m.batch_size, m.metric, m.unit,
                f"{m.median:.6g}", f"{min(m.values):.6g}", f"{max(m.values):.6g}", len(m.values),
                " ".join(f"{value:.6g}" for value in m.values),
            ])  # fmt: skip
    return path


def plot_results(path: Path, measurements: list) -> Path:
    """Draw one panel per benchmark: bars of the median by batch size, one bar per device and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, spec) for name, spec in PRIMARY_METRICS.items() if any(m.benchmark == name for m in measurements)]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4), squeeze=False)
    for axis, (name, (metric, title, label)) in zip(axes[0], panels):
        rows = [m for m in measurements if m.benchmark == name and m.metric == metric]
        batch_sizes = sorted({m.batch_size for m in rows})
        series = list(dict.fromkeys((m.device, m.method) for m in rows))
        width = 0.8 / len(series)
        for index, (device, method) in enumerate(series):
            points = {m.batch_size: m for m in rows if (m.device, m.method) == (device, method)}
            positions = [i + (index - (len(series) - 1) / 2) * width for i, size in enumerate(batch_sizes) if size in points]
            chosen = [points[size] for size in batch_sizes if size in points]
            medians = [m.median for m in chosen]
            # Error bars span the slowest and fastest timed run.
            errors = [[m.median - min(m.values) for m in chosen], [max(m.values) - m.median for m in chosen]]
            axis.bar(positions, medians, width, yerr=errors, capsize=3, label=f"{device}, {method}")
        axis.set_xticks(range(len(batch_sizes)), [str(size) for size in batch_sizes])
        axis.set_xlabel("batch size")
        axis.set_ylabel(label)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# --- Markdown ----------------------------------------------------------------------------


def write_markdown(path: Path, measurements: list, facts: dict) -> Path:
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {facts['date']} by `{facts['command']}`, in {facts['wall_seconds']:.0f} s. "
        f"Each figure is the median of {facts['repeats']} timed steps (training) or forward passes (inference) "
        f"after {facts['warmup']} untimed warm-up run(s); the range goes from the slowest to the fastest timed run. "
        "All runs are in float32.",
        "",
        *machine_table(facts["machine"]),
    ]
    if any(m.benchmark == "resnet_tf" for m in measurements):
        lines += resnet_tf_section(measurements)
    if any(m.benchmark == "distilgpt2" for m in measurements):
        lines += distilgpt2_section(measurements, facts)
    if any(m.benchmark == "resnet_torch" for m in measurements):
        lines += resnet_torch_section(measurements)
    lines += ["", f"![Medians by batch size, with the range of the timed runs]({PLOT_NAME})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def machine_table(machine: dict) -> list[str]:
    versions = machine["versions"]
    memory = machine["memory_bytes"]
    rows = [
        ("CPU", f"{machine['cpu']}, {machine['cores']} logical cores"),
        ("Memory", f"{memory / 2**30:.1f} GiB" if memory else "unknown"),
        ("OS", f"{machine['os']}, {machine['machine']}"),
        ("Python", versions.get("python")),
        ("TensorFlow, Keras", f"{versions.get('tensorflow')}, {versions.get('keras')}"),
        ("torch, torchvision", f"{versions.get('torch')}, {versions.get('torchvision')}"),
        ("transformers", versions.get("transformers")),
    ]
    if versions.get("tensorflow-metal"):
        rows.append(("tensorflow-metal", versions["tensorflow-metal"]))
    if "torch_threads" in machine:
        rows.append(("torch CPU threads", machine["torch_threads"]))
    before, after = machine["load_average_before"], machine["load_average_after"]
    if before is not None:
        rows.append(("Load average (1 min), start and end", f"{before:.2f}, {after:.2f}"))
    lines = ["## Machine", "", "| | |", "| --- | --- |", *[f"| {name} | {value} |" for name, value in rows]]
    if before is not None:
        lines += ["", "Other processes that run at the same time slow every figure; the load average shows how busy the machine was."]
    return lines


def figure_range(m, digits: int) -> str:
    return f"{min(m.values):.{digits}f} to {max(m.values):.{digits}f}"


def resnet_tf_section(measurements: list) -> list[str]:
    rows = [m for m in measurements if m.benchmark == "resnet_tf"]
    lines = [
        "",
        "## ResNet50 training, TensorFlow",
        "",
        "`keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=100)` with adam, built and "
        "trained by the train-resnet-tf workload (`model.fit`, as the original script did). The images are "
        "synthetic and CIFAR-shaped: random pixels and labels, since a step's speed does not depend on the values.",
        "",
        "| device | batch size | images/s | range |",
        "| --- | ---: | ---: | --- |",
    ]
    lines += [f"| {m.device} | {m.batch_size} | {m.median:.1f} | {figure_range(m, 1)} |" for m in rows]

    batch_sizes = sorted({m.batch_size for m in rows})
    lines += [
        "",
        "Published Apple Silicon figures for the same setup, from "
        f"[mac-ml-speed-test]({MAC_ML_SPEED_TEST_SCRIPT}): 50000 real CIFAR-100 training images divided by the mean "
        "seconds per epoch of a 5-epoch `model.fit`. That mean includes the first epoch's graph tracing, which "
        "lowers these figures against a warmed-up median. The TensorFlow and tensorflow-metal versions are not "
        "recorded with them.",
        "",
        "| chip | " + " | ".join(f"batch {size}, images/s" for size in batch_sizes) + " | source |",
        "| --- | " + " | ".join("---:" for _ in batch_sizes) + " | --- |",
    ]
    for chip, (file, seconds_by_batch) in PUBLISHED_RESNET_TF.items():
        cells = [
            f"{CIFAR100_TRAIN_IMAGES / seconds_by_batch[size]:.0f}" if size in seconds_by_batch else "n/a"
            for size in batch_sizes
        ]
        lines.append(f"| {chip} | " + " | ".join(cells) + f" | [{Path(file).name}]({MAC_ML_SPEED_TEST}/{file}) |")
    return lines


def distilgpt2_section(measurements: list, facts: dict) -> list[str]:
    text, gpt2 = facts["text"], facts["gpt2"]
    block_size = text["block_size"]
    lines = [
        "",
        "## distilgpt2 training, useful tokens per second",
        "",
        f"A GPT-2 of {gpt2['layers']} layers, {gpt2['heads']} heads and width {gpt2['embd']} with 50257 tokens and "
        "1024 positions (distilgpt2's architecture when these are 6 and 768), with random weights because the "
        "Hugging Face Hub may be out of reach. A training step is the Hugging Face Trainer's: forward, backward, "
        "gradient clipping at 1.0 and torch's AdamW at 5e-5. Two ways of batching the same text:",
        "",
        f"- mlrepro: the text's tokens concatenated and cut into blocks of {block_size}; every position is text.",
        f"- original: every row, empty ones included, tokenized with `padding=\"max_length\", truncation=True, "
        f"max_length={block_size}`, and the pad positions given the label -100 so the loss skips them.",
        "",
        "Useful tokens are non-pad tokens: a step of batch size B counts B x "
        f"{block_size} tokens for blocks and B x {text['useful_tokens_per_padded_row']:.1f} for padded rows, "
        "the mean over all padded rows. Each round times one step of each method back to back, so that a change "
        "in the machine's load slows both; the ratio is the median of the rounds' ratios of blocks to padded rows.",
        "",
        "| device | batch size | mlrepro: blocks, tokens/s | original: padded rows, tokens/s | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    rows = [m for m in measurements if m.benchmark == "distilgpt2"]
    for device, batch_size in dict.fromkeys((m.device, m.batch_size) for m in rows):
        figures = {m.method: m for m in rows if (m.device, m.batch_size) == (device, batch_size)}
        blocks, padded, ratio = figures["mlrepro: blocks"], figures["original: padded rows"], figures["blocks / padded rows"]
        lines.append(
            f"| {device} | {batch_size} | {blocks.median:.0f} ({figure_range(blocks, 0)}) "
            f"| {padded.median:.0f} ({figure_range(padded, 0)}) | {ratio.median:.2f}x |"
        )
    lines += [
        "",
        f"Text: {text['source']}, {text['rows']} rows of which {text['empty_rows']} are empty, "
        f"{text['tokens']} GPT-2 tokens, {text['mean_tokens_per_text_row']:.1f} tokens per non-empty row on average. "
        f"Padding keeps {100 * text['useful_fraction_padded']:.1f}% of the positions for text; truncation cuts "
        f"{text['rows_truncated']} rows and drops {text['tokens_lost_to_truncation']} tokens "
        f"({100 * text['tokens_lost_to_truncation'] / text['tokens']:.1f}%), which the original never trains on. "
        "The ratio depends on the rows' lengths: longer rows waste fewer positions on padding and lose more tokens "
        "to truncation.",
    ]
    return lines


def resnet_torch_section(measurements: list) -> list[str]:
    rows = [m for m in measurements if m.benchmark == "resnet_torch"]
    latencies = [m for m in rows if m.metric == "latency_ms"]
    throughput = {(m.device, m.batch_size): m for m in rows if m.metric == "images_per_second"}
    lines = [
        "",
        "## ResNet-50 inference, torch",
        "",
        "torchvision `resnet50(weights=None)` in eval mode under `torch.inference_mode()`, on a seeded random "
        "input of shape (batch size, 3, 224, 224), through the infer-resnet-torch workload.",
        "",
        "| device | batch size | latency, ms | range, ms | images/s |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for m in latencies:
        images = throughput[(m.device, m.batch_size)]
        lines.append(f"| {m.device} | {m.batch_size} | {m.median:.1f} | {figure_range(m, 1)} | {images.median:.1f} |")
    return lines


def render_summary(measurements: list) -> str:
    """Return one line per figure for the terminal."""
    lines = ["", "bench summary (medians)"]
    for m in measurements:
        lines.append(f"  {m.benchmark:<13} {m.device:<7} batch {m.batch_size:<4} {m.method:<26} {m.metric}: {m.median:.4g} {m.unit}")
    return "\n".join(lines)
