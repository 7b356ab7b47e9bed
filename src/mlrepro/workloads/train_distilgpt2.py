"""Fine-tune distilgpt2 on wikitext-2 with the Hugging Face Trainer and report perplexity.

    nox -s train_distilgpt2
    nox -s train_distilgpt2 -- --max-steps 20 --device cpu
    nox -s train_distilgpt2 -- --model ./tiny-gpt2 --train-file train.txt --eval-file valid.txt
    mlrepro train-distilgpt2 --dataset wikitext --dataset-config wikitext-2-raw-v1 --train-split "train[:5%]"

The defaults reproduce the original script: distilgpt2, 1% of wikitext-2-raw-v1's
training split, 64-token sequences, batch size 4, one epoch, the Trainer's
default AdamW learning rate of 5e-5, in fp32. Its bugs are fixed:

- The pad token is the EOS token, so the vocabulary does not grow. The
  original added "[PAD]" (id 50257) without resizing the embeddings, which
  raises an IndexError once that id reaches the model. Should a tokenizer ever
  have more tokens than the model has embedding rows, the embeddings are resized.
- Empty lines are dropped, and the text is tokenized and grouped into blocks of
  --block-size tokens whose labels are a copy of the input ids. The original
  padded every line to 64 tokens and gave no labels, so the model returned no
  loss and the Trainer raised.
- The model is evaluated on the validation slice (perplexity = exp(eval_loss)).

The model and the dataset are read from the Hugging Face cache
(~/.cache/huggingface, or $HF_HOME) and downloaded once when missing. To run
offline, set HF_HUB_OFFLINE=1 after that first run, or pass --model a local
folder saved with save_pretrained and --train-file/--eval-file local files.
The fine-tuned model and its tokenizer are saved to --output-dir.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from mlrepro.data import text
from mlrepro.devices import DEVICE_CHOICES, select_torch_device, torch_device_name
from mlrepro.errors import UsageError
from mlrepro.seeding import seed_everything

logger = logging.getLogger(__name__)

PRECISION = "fp32"


@dataclass(frozen=True)
class Defaults:
    model: str = "distilgpt2"  # Hub model name or local folder
    dataset: str = "wikitext"  # Hub dataset name or local dataset folder
    dataset_config: str = "wikitext-2-raw-v1"
    train_split: str = "train[:1%]"  # datasets split syntax: a slice of the training split
    eval_split: str = "validation[:1%]"
    block_size: int = 64  # tokens per training sequence, the original's max_length
    batch_size: int = 4  # blocks per step, for training and evaluation
    epochs: int = 1  # passes over the training blocks
    learning_rate: float = 5e-5  # AdamW step size, the Trainer's default
    logging_steps: int = 10  # optimizer steps between logged losses
    output_dir: str = "outputs/distilgpt2"


DEFAULTS = Defaults()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULTS.model, help="Hugging Face model name or local folder saved with save_pretrained (default: %(default)s)")

    source = parser.add_argument_group("text (a dataset, or local files with --train-file and --eval-file)")
    source.add_argument("--dataset", default=DEFAULTS.dataset, help="dataset name on the Hugging Face Hub, or a local dataset folder (default: %(default)s)")
    source.add_argument("--dataset-config", default=DEFAULTS.dataset_config, help="dataset configuration name (default: %(default)s)")
    source.add_argument("--train-split", default=DEFAULTS.train_split, help="training split, in datasets' slice syntax (default: %(default)s)")
    source.add_argument("--eval-split", default=DEFAULTS.eval_split, help="validation split for perplexity (default: %(default)s)")
    source.add_argument("--train-file", type=Path, metavar="PATH", help="local training text instead of --dataset: .txt (one document per line) or .parquet with a 'text' column")
    source.add_argument("--eval-file", type=Path, metavar="PATH", help="local validation text, in the same formats; required with --train-file")

    training = parser.add_argument_group("training")
    training.add_argument("--block-size", type=int, default=DEFAULTS.block_size, help="tokens per training sequence (default: %(default)s)")
    training.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="sequences per step, for training and evaluation (default: %(default)s)")
    training.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="passes over the training text (default: %(default)s)")
    training.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate, help="AdamW learning rate, decayed linearly to 0 (default: %(default)s)")
    training.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimizer steps, even within the first epoch (default: no cap)")
    training.add_argument("--logging-steps", type=int, default=DEFAULTS.logging_steps, help="optimizer steps between logged training losses (default: %(default)s)")
    training.add_argument("--device", default="auto", help=f"torch device: {', '.join(DEVICE_CHOICES)} (default: %(default)s)")
    training.add_argument("--output-dir", type=Path, default=Path(DEFAULTS.output_dir), help="folder for the fine-tuned model and tokenizer (default: %(default)s)")


def check_arguments(args: argparse.Namespace) -> None:
    for flag, value in (
        ("--block-size", args.block_size),
        ("--batch-size", args.batch_size),
        ("--epochs", args.epochs),
        ("--logging-steps", args.logging_steps),
    ):
        if value < 1:
            raise UsageError(f"{flag} {value} is invalid; pass 1 or more")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps {args.max_steps} is invalid; pass 1 or more, or leave it out")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(
            f"--learning-rate {args.learning_rate} is invalid; pass a positive, finite number such as 5e-5"
        )
    check_output_dir(args.output_dir)

    if args.train_file is not None and args.eval_file is None:
        raise UsageError("--eval-file is missing: --train-file needs it; pass both, or neither to use --dataset")
    if args.eval_file is not None and args.train_file is None:
        raise UsageError("--train-file is missing: --eval-file needs it; pass both, or neither to use --dataset")
    changed_dataset_flags = [
        flag
        for flag, value, default in (
            ("--dataset", args.dataset, DEFAULTS.dataset),
            ("--dataset-config", args.dataset_config, DEFAULTS.dataset_config),
            ("--train-split", args.train_split, DEFAULTS.train_split),
            ("--eval-split", args.eval_split, DEFAULTS.eval_split),
        )
        if value != default
    ]
    if args.train_file is not None and changed_dataset_flags:
        raise UsageError(
            f"{', '.join(changed_dataset_flags)} cannot be combined with --train-file; "
            "pass either the dataset options or --train-file and --eval-file"
        )


def check_output_dir(output_dir: Path) -> None:
    """Raise UsageError, before any training, unless output_dir is a writable folder or can be created."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir} is a file, not a folder; pass a folder path")

    existing = output_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(
            f"--output-dir {output_dir} cannot be created because {existing} is a file; pass another folder path"
        )
    # save_model creates the missing folders below `existing`, so that folder must be writable.
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output-dir {output_dir}: the folder {existing} is not writable; pass a folder you can write to"
        )


# --- Model and tokenizer -----------------------------------------------------------------


def load_pretrained(loader, model: str, **kwargs):
    """Call loader.from_pretrained(model), turning a missing model into a UsageError with the fix.

    trust_remote_code is always off: a model folder or Hub repository cannot run its own code here.
    """
    from huggingface_hub import constants

    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"--model {model}: the folder has no config.json; pass a folder saved with save_pretrained")
        model = str(path)
    elif model.startswith((".", "/", "~")):
        raise UsageError(f"--model {model}: folder not found; check the path")

    try:
        return loader.from_pretrained(model, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as error:
        if path.is_dir():
            raise UsageError(f"--model {model}: {loader.__name__} could not load the folder: {error}") from error
        if constants.HF_HUB_OFFLINE:
            raise UsageError(
                f"--model {model} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set; "
                "run once with the network to download it, or pass --model a local folder saved with save_pretrained"
            ) from error
        raise UsageError(f"--model {model} could not be loaded: {error}") from error


def load_tokenizer(model: str):
    """Load the model's tokenizer and give it a pad token without adding a token."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, model)
    check_tokenizer_files(model)
    set_pad_token(tokenizer)
    return tokenizer


def check_tokenizer_files(model: str) -> None:
    """Raise UsageError when a local model folder has no tokenizer files.

    From a folder with only config.json, transformers 5.25 builds an empty
    GPT-2 tokenizer (only its EOS token) instead of raising, and every text
    would then tokenize to 0 tokens.
    """
    path = Path(model).expanduser()
    if not path.is_dir():
        return
    has_bpe_files = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if (path / "tokenizer.json").is_file() or has_bpe_files:
        return
    raise UsageError(
        f"--model {model}: the tokenizer could not be loaded from the folder, which has neither tokenizer.json "
        "nor vocab.json with merges.txt; save the tokenizer there with tokenizer.save_pretrained"
    )


def set_pad_token(tokenizer) -> None:
    """Pad with the EOS token when the tokenizer has no pad token (GPT-2 has none).

    Blocks are full, so nothing is padded in training; the pad token is saved
    with the tokenizer for later batched use. Reusing EOS keeps len(tokenizer)
    equal to the model's embedding rows.
    """
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is None:
        raise UsageError(f"the tokenizer of {tokenizer.name_or_path} has neither a pad nor an EOS token; use a GPT-style model")
    tokenizer.pad_token = tokenizer.eos_token


def load_model(model: str):
    """Load the causal language model in float32, on the CPU. The Trainer moves it to the device."""
    import torch
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, model, dtype=torch.float32)


def fit_embeddings_to_tokenizer(model, tokenizer) -> None:
    """Resize the token embeddings when the tokenizer has ids beyond the embedding matrix.

    Afterwards every id below len(tokenizer) has an embedding row, so a token
    added to the tokenizer (such as the original script's "[PAD]", id 50257
    for GPT-2) cannot raise an IndexError in the embedding lookup.
    """
    num_rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > num_rows:
        logger.warning("The tokenizer has %d tokens but the model %d embedding rows; resizing the embeddings", len(tokenizer), num_rows)
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def check_block_size(block_size: int, config) -> None:
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and block_size > max_positions:
        raise UsageError(
            f"--block-size {block_size} is larger than the model's {max_positions} positions "
            f"(max_position_embeddings); pass --block-size {max_positions} or less"
        )


# --- Data --------------------------------------------------------------------------------


def load_texts(args: argparse.Namespace) -> tuple[list[str], str, list[str], str]:
    """Return (train documents, their description, eval documents, their description)."""
    if args.train_file is not None:
        return (
            text.load_text_file(args.train_file), f"--train-file {args.train_file}",
            text.load_text_file(args.eval_file), f"--eval-file {args.eval_file}",
        )  # fmt: skip

    name = f"{args.dataset}/{args.dataset_config}" if args.dataset_config else args.dataset
    return (
        text.load_dataset_texts(args.dataset, args.dataset_config, args.train_split), f"{name} {args.train_split}",
        text.load_dataset_texts(args.dataset, args.dataset_config, args.eval_split), f"{name} {args.eval_split}",
    )  # fmt: skip


# --- Training ----------------------------------------------------------------------------


def perplexity(loss: float) -> float:
    """Return exp(loss), the perplexity of a mean cross-entropy in nats; inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def record_callback(record):
    """Return a TrainerCallback that writes each logged loss and evaluation to the run record."""
    from transformers import TrainerCallback

    class RecordCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                logger.info("step %d/%d: loss %.4f", state.global_step, state.max_steps, logs["loss"])
                record.log(step=state.global_step, loss=logs["loss"])
            if "eval_loss" in logs:
                eval_perplexity = perplexity(logs["eval_loss"])
                logger.info("eval: loss %.4f, perplexity %.2f", logs["eval_loss"], eval_perplexity)
                record.log(epoch=state.epoch, eval_loss=logs["eval_loss"], perplexity=eval_perplexity)

    return RecordCallback()


def training_arguments(args: argparse.Namespace, device):
    """Return TrainingArguments that train on `device` in fp32 and save nothing on their own."""
    from transformers import TrainingArguments

    training_args = TrainingArguments(
        output_dir=str(args.output_dir),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        learning_rate=args.learning_rate,
        # Train in fp32 on every device, as the original did, so MPS never runs fp16 or bf16.
        fp16=False,
        bf16=False,
        # The Trainer picks CUDA or MPS by itself, and use_cpu is its only switch to the CPU.
        use_cpu=device.type == "cpu",
        dataloader_pin_memory=device.type == "cuda",
        seed=args.seed,
        full_determinism=args.deterministic,
        logging_strategy="steps",
        logging_steps=args.logging_steps,
        logging_first_step=True,
        eval_strategy="no",  # evaluated once, after training
        save_strategy="no",  # run() saves the final model and tokenizer
        report_to="none",
        include_num_input_tokens_seen="all",
    )
    check_trainer_device(training_args, device)
    return training_args


def check_trainer_device(training_args, device) -> None:
    """Raise UsageError unless the Trainer will train on the device that select_torch_device chose."""
    trainer_device = training_args.device
    if trainer_device.type != device.type:
        raise UsageError(
            f"--device {device} was selected, but the Hugging Face Trainer would train on {trainer_device}; "
            "unset ACCELERATE_USE_CPU, or pass --device auto"
        )
    if device.index is not None and trainer_device.index != device.index:
        raise UsageError(
            f"--device {device}: the Hugging Face Trainer trains on the first visible GPU ({trainer_device}); "
            f"run with CUDA_VISIBLE_DEVICES={device.index} and --device cuda"
        )
    if training_args.n_gpu > 1:
        logger.warning(
            "The Trainer splits each step over %d GPUs (torch DataParallel), so each step uses %d blocks "
            "instead of --batch-size %d; set CUDA_VISIBLE_DEVICES to one GPU to keep --batch-size blocks per step",
            training_args.n_gpu, training_args.train_batch_size, training_args.per_device_train_batch_size,
        )  # fmt: skip


def build_trainer(model, tokenizer, train_dataset, eval_dataset, training_args, record):
    from transformers import Trainer, default_data_collator

    # Every block is full and already has labels, so batching only stacks them.
    # DataCollatorForLanguageModeling(mlm=False) would rebuild labels and set
    # every pad-token position to -100, and here the pad token is EOS, so it
    # would also drop the loss on each real end-of-text token.
    return Trainer(
        model=model,
        args=training_args,
        data_collator=default_data_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[record_callback(record)],
    )


def save_model(model, tokenizer, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    logger.info("Saved the model and tokenizer to %s", output_dir)


# --- Workload ----------------------------------------------------------------------------


def run(args: argparse.Namespace, record) -> dict:
    check_arguments(args)

    # Seed and device
    import torch  # noqa: F401  (imported so that seed_everything seeds torch)

    seed_everything(args.seed, args.deterministic)
    device = select_torch_device(args.device)
    logger.info("train_distilgpt2: device %s, precision %s, seed %d", torch_device_name(device), PRECISION, args.seed)
    training_args = training_arguments(args, device)

    # Data
    tokenizer = load_tokenizer(args.model)
    train_texts, train_source, eval_texts, eval_source = load_texts(args)
    train_dataset = text.build_block_dataset(tokenizer, train_texts, args.block_size, train_source)
    eval_dataset = text.build_block_dataset(tokenizer, eval_texts, args.block_size, eval_source)

    # Model
    model = load_model(args.model)
    check_block_size(args.block_size, model.config)
    fit_embeddings_to_tokenizer(model, tokenizer)
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    logger.info("Model %s: %s parameters", args.model, f"{num_parameters:,}")

    # Run
    trainer = build_trainer(model, tokenizer, train_dataset, eval_dataset, training_args, record)
    train_result = trainer.train()
    eval_metrics = trainer.evaluate()
    save_model(trainer.model, tokenizer, args.output_dir)

    # Report
    train_runtime = train_result.metrics["train_runtime"]
    train_tokens = trainer.state.num_input_tokens_seen
    return {
        "model": args.model,
        "device": str(training_args.device),
        "precision": PRECISION,
        "parameters": num_parameters,
        "block_size": args.block_size,
        "train_blocks": len(train_dataset),
        "eval_blocks": len(eval_dataset),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": train_result.training_loss,
        "eval_loss": eval_metrics["eval_loss"],
        "eval_perplexity": perplexity(eval_metrics["eval_loss"]),
        "train_tokens": train_tokens,
        "train_runtime_s": train_runtime,
        "train_tokens_per_second": train_tokens / train_runtime if train_runtime > 0 else math.inf,
        "output_dir": str(args.output_dir),
    }
