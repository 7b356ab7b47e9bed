"""The train-resnet-tf workload: argument errors, a tiny end-to-end run, and real CIFAR-100 samples."""

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from cifar_fixtures import random_cifar100_folder, write_cifar100_folder
from samples import extract_members

from mlrepro import cli
from mlrepro.data import cifar100
from mlrepro.workloads import train_resnet_tf


@pytest.fixture
def cifar_dir(tmp_path):
    return random_cifar100_folder(tmp_path / "cifar-100-python", train_count=40, test_count=20)


def run_cli(*args):
    return cli.main(["train-resnet-tf", *map(str, args)])


def test_cli_missing_folder(tmp_path, capsys):
    absent = tmp_path / "absent"
    assert run_cli("--data-dir", absent) == 2
    error = capsys.readouterr().err
    assert f"--data-dir {absent} is not a folder" in error
    assert "train, test, meta" in error


def test_cli_folder_lacks_files(cifar_dir, capsys):
    (cifar_dir / "test").unlink()
    assert run_cli("--data-dir", cifar_dir) == 2
    error = capsys.readouterr().err
    assert f"--data-dir {cifar_dir} is missing test" in error
    assert "train, test, meta" in error


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--train-limit", 0),
        ("--test-limit", -3),
        ("--epochs", 0),
        ("--batch-size", 0),
        ("--learning-rate", -0.5),
        ("--learning-rate", "inf"),
        ("--learning-rate", "nan"),
    ],
)
def test_cli_bad_number(cifar_dir, capsys, flag, value):
    assert run_cli("--data-dir", cifar_dir, flag, value) == 2
    assert f"{flag} {value} is invalid" in capsys.readouterr().err


def test_cli_keras_home_is_file(tmp_path, monkeypatch, capsys):
    keras_home = tmp_path / "keras-home"
    keras_home.write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))

    assert run_cli("--no-record") == 2
    error = capsys.readouterr().err
    assert f"the CIFAR-100 cache folder {keras_home / 'datasets'} could not be created" in error
    assert "set KERAS_HOME to a writable folder, or pass --data-dir" in error
    assert "Traceback" not in error


def test_cli_limit_larger_than_split(cifar_dir, capsys):
    assert run_cli("--data-dir", cifar_dir, "--test-limit", 21, "--no-record") == 2
    error = capsys.readouterr().err
    assert "--test-limit 21 is larger than the test split" in error
    assert "(20 images)" in error


def test_summary_excludes_first_epoch():
    args = SimpleNamespace(epochs=3, batch_size=8, learning_rate=0.001)
    history = SimpleNamespace(history={"loss": [5.0, 4.0, 3.0], "accuracy": [0.0, 0.1, 0.2]})
    summary = train_resnet_tf.summarize(
        args, "CPU", history, [20.0, 2.0, 2.0], 32, {"loss": 4.5, "accuracy": 0.05}, 16, 1.0
    )
    assert summary["train_images_per_second_after_first_epoch"] == pytest.approx(16.0)
    assert "train_images_per_second_first_epoch" not in summary
    assert summary["train_loss"] == 3.0
    assert summary["train_seconds"] == 24.0


def test_summary_single_epoch():
    args = SimpleNamespace(epochs=1, batch_size=8, learning_rate=0.001)
    history = SimpleNamespace(history={"loss": [5.0], "accuracy": [0.0]})
    test_metrics = {"loss": 4.5, "accuracy": 0.05}
    summary = train_resnet_tf.summarize(args, "CPU", history, [16.0], 32, test_metrics, 16, 1.0)
    assert summary["train_images_per_second_first_epoch"] == pytest.approx(2.0)
    assert "train_images_per_second_after_first_epoch" not in summary


def read_metrics(runs_dir):
    (run_dir,) = runs_dir.iterdir()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return run_dir, [json.loads(line) for line in lines]


def assert_finite_metrics(summary):
    for key in ("train_loss", "test_loss"):
        assert math.isfinite(summary[key]), key
    for key in ("train_accuracy", "test_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key


@pytest.mark.smoke
def test_train_tiny_run(cifar_dir, tmp_path, isolated_runs_dir):
    output = tmp_path / "out.json"
    exit_code = run_cli(
        "--data-dir", cifar_dir, "--epochs", 1, "--batch-size", 8, "--train-limit", 32, "--test-limit", 16,
        "--output", output,
    )  # fmt: skip
    assert exit_code == 0

    summary = json.loads(output.read_text())
    assert_finite_metrics(summary)
    assert summary["train_images"] == 32
    assert summary["test_images"] == 16
    assert summary["train_images_per_second_first_epoch"] > 0

    run_dir, metrics = read_metrics(isolated_runs_dir)
    assert [entry["epoch"] for entry in metrics] == [1]
    assert metrics[0]["loss"] == pytest.approx(summary["train_loss"])
    assert metrics[0]["images_per_second"] > 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def read_foolbox_cifar100(folder):
    """Return the foolbox CIFAR-100 samples as uint8 (20, 32, 32, 3) images and their labels."""
    from PIL import Image

    paths = extract_members("foolbox", "foolbox/data/cifar100_", folder)
    images, labels = [], []
    for path in paths:
        # cifar100_07_14.png: sample 7, label 14.
        match = re.fullmatch(r"cifar100_(\d+)_(\d+)\.png", path.name)
        assert match, path.name
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("RGB")))
        labels.append(int(match.group(2)))
    return np.stack(images), labels


@pytest.mark.realdata
def test_train_foolbox_samples(tmp_path, isolated_runs_dir):
    images, labels = read_foolbox_cifar100(tmp_path / "png")
    assert images.shape == (20, 32, 32, 3)
    assert all(0 <= label < 100 for label in labels)

    # 16 images to train on, 4 to test on, written as the official pickles.
    data_dir = write_cifar100_folder(
        tmp_path / "cifar-100-python", (images[:16], labels[:16]), (images[16:], labels[16:])
    )
    loaded_images, loaded_labels = cifar100.load_split(data_dir, "test")
    np.testing.assert_array_equal(loaded_images, images[16:])
    assert loaded_labels.tolist() == labels[16:]

    output = tmp_path / "out.json"
    assert run_cli("--data-dir", data_dir, "--epochs", 1, "--batch-size", 8, "--output", output) == 0
    summary = json.loads(output.read_text())
    assert_finite_metrics(summary)
    assert summary["train_images"] == 16
    assert summary["test_images"] == 4
    _, metrics = read_metrics(isolated_runs_dir)
    assert len(metrics) == 1
