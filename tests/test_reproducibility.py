"""Seeded CPU runs of each training workload: the same seed gives the same losses, another seed others.

Each workload runs three times through the CLI, and the losses are read back
from the run records' metrics.jsonl. The runs leave --deterministic off: it
turns on process-wide settings (TensorFlow op determinism, torch deterministic
algorithms) that would outlive the test, and on the CPU the seeds alone give
identical losses. ResNet50's training steps run eagerly (see tf_fixtures).

NOTE: so the traced training step, with the kernels that TensorFlow's graph
optimizer fuses, is not covered here.
"""

from __future__ import annotations

import json

import pytest

from cifar_fixtures import random_cifar100_folder
from gpt2_fixtures import text_files, tiny_gpt2_dir  # noqa: F401  (pytest fixtures)
from tf_fixtures import tf_functions_eager  # noqa: F401  (pytest fixture)
from mlrepro import cli
from mlrepro.workloads import train_distilgpt2


def run_losses(runs_dir, argv: list[str]) -> list[float]:
    """Run a workload through the CLI with a run record; return the losses in its metrics.jsonl."""
    before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    assert cli.main([*argv, "--runs-dir", str(runs_dir)]) == 0
    (run_dir,) = set(runs_dir.iterdir()) - before
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [entry["loss"] for entry in map(json.loads, lines) if "loss" in entry]


@pytest.mark.smoke
@pytest.mark.filterwarnings("ignore:Even though the `tf.config.experimental_run_functions_eagerly`:UserWarning")
def test_resnet_tf_seeded_losses(tmp_path, tf_functions_eager):  # noqa: F811
    # 16 images in batches of 8 for 2 epochs: the smallest run that still logs two losses.
    data_dir = random_cifar100_folder(tmp_path / "cifar-100-python", train_count=16, test_count=8)
    argv = ["train-resnet-tf", "--data-dir", str(data_dir), "--epochs", "2", "--batch-size", "8"]

    first = run_losses(tmp_path / "runs", [*argv, "--seed", "42"])
    second = run_losses(tmp_path / "runs", [*argv, "--seed", "42"])
    other_seed = run_losses(tmp_path / "runs", [*argv, "--seed", "7"])

    assert len(first) == 2
    assert first == second
    assert other_seed != first


@pytest.mark.smoke
def test_distilgpt2_seeded_losses(tiny_gpt2_dir, text_files, tmp_path):
    argv = [
        "train-distilgpt2", "--model", str(tiny_gpt2_dir), "--train-file", str(text_files["train_txt"]),
        "--eval-file", str(text_files["eval_txt"]), "--block-size", "16", "--max-steps", "4",
        "--logging-steps", "1", "--output-dir", str(tmp_path / "model"),
    ]  # fmt: skip

    first = run_losses(tmp_path / "runs", [*argv, "--seed", "42"])
    second = run_losses(tmp_path / "runs", [*argv, "--seed", "42"])
    other_seed = run_losses(tmp_path / "runs", [*argv, "--seed", "7"])

    assert len(first) == 4
    assert first == second
    assert other_seed != first


def test_trainer_seed_from_cli(tmp_path):
    import torch

    args = cli.build_parser().parse_args(["train-distilgpt2", "--seed", "7", "--output-dir", str(tmp_path)])
    training_args = train_distilgpt2.training_arguments(args, torch.device("cpu"))

    # The Trainer reseeds Python, NumPy and torch with args.seed when it is built,
    # and its shuffling follows data_seed, or args.seed when data_seed is None.
    assert training_args.seed == 7
    assert training_args.data_seed in (None, 7)
