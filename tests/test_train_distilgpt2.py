"""train_distilgpt2: the original script's bugs, argument errors, and end-to-end runs."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest

from gpt2_fixtures import (  # noqa: F401  (pytest fixtures)
    datasets_cache,
    hub_layout_dataset,
    real_gpt2_tokenizer_dir,
    save_gpt2_model,
    text_files,
    tiny_gpt2_dir,
)
from mlrepro import cli
from mlrepro.data import text
from mlrepro.errors import UsageError
from mlrepro.runs import RunRecord
from mlrepro.workloads import train_distilgpt2 as workload


def load_tiny(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir), AutoTokenizer.from_pretrained(tiny_gpt2_dir)


def parse(argv):
    return cli.build_parser().parse_args(["train-distilgpt2", *argv])


# --- The original script's bugs ------------------------------------------------------------


def test_pad_token_reuses_eos(tiny_gpt2_dir):
    tokenizer = workload.load_tokenizer(str(tiny_gpt2_dir))
    model = workload.load_model(str(tiny_gpt2_dir))

    assert tokenizer.pad_token == tokenizer.eos_token
    assert len(tokenizer) == model.get_input_embeddings().num_embeddings


def test_added_pad_token_resized(tiny_gpt2_dir):
    """Original bug: "[PAD]" added without resize_token_embeddings raised IndexError."""
    import torch

    model, tokenizer = load_tiny(tiny_gpt2_dir)
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    new_id = tokenizer.pad_token_id
    input_ids = torch.tensor([[new_id, 5, 6]])

    assert new_id == model.get_input_embeddings().num_embeddings
    with pytest.raises(IndexError):
        model(input_ids=input_ids)

    workload.fit_embeddings_to_tokenizer(model, tokenizer)
    logits = model(input_ids=input_ids).logits

    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    assert logits.shape == (1, 3, len(tokenizer))
    assert torch.isfinite(logits).all()
    assert model.config.pad_token_id == new_id


def test_blocks_give_loss(tiny_gpt2_dir, text_files):
    """Original bug: batches had no labels, so the model returned no loss and the Trainer raised."""
    import torch
    from transformers import default_data_collator

    model, tokenizer = load_tiny(tiny_gpt2_dir)
    documents = text.load_text_file(text_files["train_txt"])
    dataset = text.build_block_dataset(tokenizer, documents, 16, "train.txt")
    batch = default_data_collator([dataset[i] for i in range(4)])

    assert model(input_ids=batch["input_ids"]).loss is None
    loss = model(**batch).loss

    assert batch["labels"].shape == (4, 16)
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert loss is not None
    assert torch.isfinite(loss)
    # A random model's loss is near log(vocabulary size).
    assert abs(loss.item() - math.log(len(tokenizer))) < 1.0


def test_perplexity_values():
    assert workload.perplexity(0.0) == 1.0
    assert workload.perplexity(math.log(50.0)) == pytest.approx(50.0)
    assert workload.perplexity(1000.0) == math.inf


# --- Argument and input errors -----------------------------------------------------------


def test_block_size_larger_than_slice(tiny_gpt2_dir, text_files, tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text(" = Title = \n\n A short line . \n", encoding="utf-8")

    code = cli.main([
        "train-distilgpt2", "--model", str(tiny_gpt2_dir), "--train-file", str(small),
        "--eval-file", str(text_files["eval_txt"]), "--block-size", "64", "--output-dir", str(tmp_path / "out"),
    ])  # fmt: skip
    message = capsys.readouterr().err

    assert code == 2
    assert "--block-size 64 is larger than the" in message
    assert f"tokens of --train-file {small}" in message
    assert "Traceback" not in message


def test_block_size_beyond_positions(tiny_gpt2_dir, text_files, tmp_path, capsys):
    code = cli.main([
        "train-distilgpt2", "--model", str(tiny_gpt2_dir), "--train-file", str(text_files["train_txt"]),
        "--eval-file", str(text_files["eval_txt"]), "--block-size", "129", "--output-dir", str(tmp_path / "out"),
    ])  # fmt: skip

    assert code == 2
    assert "model's 128 positions" in capsys.readouterr().err


def test_missing_train_file(tiny_gpt2_dir, text_files, tmp_path, capsys):
    code = cli.main([
        "train-distilgpt2", "--model", str(tiny_gpt2_dir), "--train-file", str(tmp_path / "absent.txt"),
        "--eval-file", str(text_files["eval_txt"]), "--output-dir", str(tmp_path / "out"),
    ])  # fmt: skip
    message = capsys.readouterr().err

    assert code == 2
    assert "absent.txt not found" in message


def test_blank_train_file(tiny_gpt2_dir, text_files, tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\t\n", encoding="utf-8")

    code = cli.main([
        "train-distilgpt2", "--model", str(tiny_gpt2_dir), "--train-file", str(blank),
        "--eval-file", str(text_files["eval_txt"]), "--output-dir", str(tmp_path / "out"),
    ])  # fmt: skip
    message = capsys.readouterr().err

    assert code == 2
    assert f"--train-file {blank} has no text after dropping empty lines" in message
    assert "Traceback" not in message


def test_train_file_needs_eval_file(text_files, capsys):
    code = cli.main(["train-distilgpt2", "--train-file", str(text_files["train_txt"])])

    assert code == 2
    assert "--eval-file is missing: --train-file needs it" in capsys.readouterr().err


def test_train_file_with_dataset_option(text_files, capsys):
    code = cli.main([
        "train-distilgpt2", "--train-file", str(text_files["train_txt"]), "--eval-file", str(text_files["eval_txt"]),
        "--dataset", "ptb_text_only",
    ])  # fmt: skip

    assert code == 2
    assert "--dataset cannot be combined with --train-file" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "-0.5"])
def test_learning_rate_not_finite_positive(value, capsys):
    code = cli.main(["train-distilgpt2", f"--learning-rate={value}"])

    assert code == 2
    assert f"--learning-rate {value} is invalid" in capsys.readouterr().err


def test_output_dir_is_file(tmp_path, capsys):
    output_file = tmp_path / "model.bin"
    output_file.write_bytes(b"")

    code = cli.main(["train-distilgpt2", "--output-dir", str(output_file)])

    assert code == 2
    assert f"--output-dir {output_file} is a file, not a folder" in capsys.readouterr().err


def test_output_dir_below_file(tmp_path, capsys):
    output_file = tmp_path / "model.bin"
    output_file.write_bytes(b"")

    code = cli.main(["train-distilgpt2", "--output-dir", str(output_file / "model")])

    assert code == 2
    assert f"cannot be created because {output_file} is a file" in capsys.readouterr().err


def test_output_dir_not_writable(tmp_path, capsys):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if os.access(read_only, os.W_OK):
        pytest.skip("permission bits do not apply to this user (root)")

    code = cli.main(["train-distilgpt2", "--output-dir", str(read_only / "model")])

    assert code == 2
    assert f"the folder {read_only} is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--block-size", "--batch-size", "--epochs", "--max-steps", "--logging-steps"])
def test_non_positive_counts(flag, capsys):
    code = cli.main(["train-distilgpt2", flag, "0"])

    assert code == 2
    assert f"{flag} 0 is invalid" in capsys.readouterr().err


def test_model_offline_not_cached(capsys):
    code = cli.main(["train-distilgpt2", "--model", "mlrepro-test/no-such-model"])
    message = capsys.readouterr().err

    assert code == 2
    assert "not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message


def test_model_folder_missing(tmp_path, capsys):
    code = cli.main(["train-distilgpt2", "--model", str(tmp_path / "no-model")])

    assert code == 2
    assert "folder not found" in capsys.readouterr().err


def test_model_folder_without_config(tmp_path, capsys):
    code = cli.main(["train-distilgpt2", "--model", str(tmp_path)])

    assert code == 2
    assert "no config.json" in capsys.readouterr().err


def test_model_folder_without_tokenizer(tiny_gpt2_dir, text_files, tmp_path, capsys):
    model_dir = tmp_path / "config-only"
    model_dir.mkdir()
    shutil.copy(tiny_gpt2_dir / "config.json", model_dir / "config.json")

    code = cli.main([
        "train-distilgpt2", "--model", str(model_dir), "--train-file", str(text_files["train_txt"]),
        "--eval-file", str(text_files["eval_txt"]), "--output-dir", str(tmp_path / "out"),
    ])  # fmt: skip
    message = capsys.readouterr().err

    assert code == 2
    assert f"--model {model_dir}: the tokenizer could not be loaded from the folder" in message
    assert "tokenizer.json nor vocab.json with merges.txt" in message


def test_dataset_offline_not_cached(tiny_gpt2_dir, datasets_cache, tmp_path, capsys):
    code = cli.main([
        "train-distilgpt2", "--model", str(tiny_gpt2_dir), "--dataset", "mlrepro-test/no-such-dataset",
        "--output-dir", str(tmp_path / "out"),
    ])  # fmt: skip

    message = capsys.readouterr().err

    assert code == 2
    assert "dataset 'mlrepro-test/no-such-dataset'" in message
    assert "is not in the local Hugging Face cache" in message


def test_trainer_device_mismatch(tmp_path):
    import torch

    args = parse(["--output-dir", str(tmp_path)])

    # On a machine without CUDA, TrainingArguments without use_cpu still resolve to the CPU.
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("needs a machine with no accelerator")
    with pytest.raises(UsageError, match="would train on cpu"):
        workload.training_arguments(args, torch.device("cuda"))


def test_trainer_device_cpu(tmp_path):
    import torch

    training_args = workload.training_arguments(parse(["--output-dir", str(tmp_path)]), torch.device("cpu"))

    assert training_args.device.type == "cpu"
    assert training_args.use_cpu
    assert not training_args.fp16
    assert not training_args.bf16


# --- End-to-end runs ------------------------------------------------------------------------


def tiny_run_argv(tiny_gpt2_dir, text_files, output_dir, *extra):
    return [
        "--model", str(tiny_gpt2_dir), "--train-file", str(text_files["train_txt"]),
        "--eval-file", str(text_files["eval_txt"]), "--block-size", "16", "--output-dir", str(output_dir), *extra,
    ]  # fmt: skip


@pytest.mark.smoke
def test_smoke_txt_files(tiny_gpt2_dir, text_files, tmp_path, isolated_runs_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output_dir = tmp_path / "model"
    summary_path = tmp_path / "summary.json"

    code = cli.main(["train-distilgpt2", *tiny_run_argv(tiny_gpt2_dir, text_files, output_dir), "--output", str(summary_path)])
    summary = json.loads(summary_path.read_text(encoding="utf-8"))

    assert code == 0
    assert math.isfinite(summary["train_loss"])
    assert math.isfinite(summary["eval_perplexity"])
    assert summary["eval_perplexity"] > 1
    assert summary["eval_perplexity"] == pytest.approx(math.exp(summary["eval_loss"]))
    assert summary["device"] == "cpu"
    assert summary["train_tokens"] == summary["train_blocks"] * 16
    assert summary["train_tokens_per_second"] > 0
    assert (output_dir / "model.safetensors").is_file()
    assert (output_dir / "config.json").is_file()
    assert (output_dir / "tokenizer.json").is_file()

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    assert tokenizer.pad_token == tokenizer.eos_token
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)

    (run_dir,) = isolated_runs_dir.iterdir()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert metrics[0]["step"] == 1
    assert "loss" in metrics[0]
    assert metrics[-1]["perplexity"] == pytest.approx(summary["eval_perplexity"])


@pytest.mark.smoke
def test_smoke_hub_layout_dataset(tiny_gpt2_dir, hub_layout_dataset, datasets_cache, tmp_path):
    """The --dataset path (datasets.load_dataset with config and split), on a local folder."""
    summary_path = tmp_path / "summary.json"

    code = cli.main([
        "train-distilgpt2", "--model", str(tiny_gpt2_dir), "--dataset", str(hub_layout_dataset),
        "--train-split", "train", "--eval-split", "validation", "--block-size", "16", "--max-steps", "3",
        "--output-dir", str(tmp_path / "model"), "--output", str(summary_path), "--no-record",
    ])  # fmt: skip
    summary = json.loads(summary_path.read_text(encoding="utf-8"))

    assert code == 0
    assert summary["steps"] == 3
    assert summary["train_tokens"] == 3 * 4 * 16
    assert summary["eval_perplexity"] > 1


@pytest.mark.smoke
def test_seeded_runs_same_losses(tiny_gpt2_dir, text_files, tmp_path):
    losses = []
    for run_index in range(2):
        args = parse(tiny_run_argv(tiny_gpt2_dir, text_files, tmp_path / f"model-{run_index}", "--logging-steps", "1", "--max-steps", "4"))
        record = RunRecord.disabled("train-distilgpt2")
        workload.run(args, record)
        losses.append([entry["loss"] for entry in record.metrics if "loss" in entry])

    assert len(losses[0]) == 4
    assert losses[0] == losses[1]


@pytest.fixture
def large_files_dir(tmp_path):
    """A folder for model weights of several hundred MB, removed after the test."""
    directory = tmp_path / "large"
    directory.mkdir()
    yield directory
    shutil.rmtree(directory)


@pytest.mark.realdata
def test_real_gpt2_tokenizer_run(real_gpt2_tokenizer_dir, text_files, large_files_dir, tmp_path):
    """GPT-2's real BPE with a randomly initialised model of distilgpt2's size (82M parameters)."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(real_gpt2_tokenizer_dir)
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    assert tokenizer.eos_token_id == 50256

    model_dir = save_gpt2_model(
        large_files_dir / "distilgpt2-architecture", tokenizer,
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=6, n_head=12,
    )  # fmt: skip
    output_dir = large_files_dir / "fine-tuned"
    summary_path = tmp_path / "summary.json"

    # Two steps of 2 x 32 tokens: 16 to 35 s in all on two CPU cores shared with other jobs.
    code = cli.main([
        "train-distilgpt2", "--model", str(model_dir), "--train-file", str(text_files["train_parquet"]),
        "--eval-file", str(text_files["eval_parquet"]), "--block-size", "32", "--batch-size", "2",
        "--max-steps", "2", "--logging-steps", "1", "--output-dir", str(output_dir),
        "--output", str(summary_path), "--no-record",
    ])  # fmt: skip
    summary = json.loads(summary_path.read_text(encoding="utf-8"))

    assert code == 0
    assert summary["parameters"] == 81_912_576
    assert summary["steps"] == 2
    assert math.isfinite(summary["train_loss"])
    assert summary["eval_blocks"] >= 1
    assert 1 < summary["eval_perplexity"] < math.inf
    reloaded = AutoTokenizer.from_pretrained(output_dir)
    assert reloaded("Hello world")["input_ids"] == [15496, 995]
    assert len(reloaded) == 50257
    assert reloaded.pad_token_id == 50256
    assert json.loads((output_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"] == 50257
