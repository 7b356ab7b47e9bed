"""Text for causal language modelling: load it, drop empty lines, tokenize, group into blocks.

Text comes from one of two sources:

- a dataset read with `datasets.load_dataset(name, config, split=...)`: a
  Hugging Face Hub name such as wikitext / wikitext-2-raw-v1 / train[:1%], or
  a local dataset folder in the Hub layout;
- a local file: .txt with one document per line, or .parquet with a `text`
  column.

Every document is tokenized, the token ids are concatenated, and the result
is cut into blocks of block_size tokens, as transformers' run_clm.py does.
The tail shorter than one block is dropped. Each block's labels are a copy of
its input_ids, because GPT-2 shifts labels by one position inside its loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlrepro.errors import UsageError

logger = logging.getLogger(__name__)

TEXT_COLUMN = "text"
TEXT_FILE_SUFFIXES = (".txt", ".parquet")


def load_dataset_texts(name: str, config: str | None, split: str) -> list[str]:
    """Return the `text` column of one split of a Hub dataset or a local dataset folder.

    Raises UsageError when the dataset, config, split or column cannot be found,
    including when HF_DATASETS_OFFLINE=1 and the dataset is not in the local cache.
    """
    import datasets

    label = f"dataset {name!r}" + (f" (config {config!r})" if config else "")
    try:
        dataset = datasets.load_dataset(name, config or None, split=split)
    except ConnectionError as error:
        if datasets.config.HF_HUB_OFFLINE:
            raise UsageError(
                f"{label} is not in the local Hugging Face cache and HF_DATASETS_OFFLINE=1 or "
                "HF_HUB_OFFLINE=1 is set; run once with the network to download it, "
                "or pass local files with --train-file and --eval-file"
            ) from error
        raise UsageError(
            f"{label} could not be downloaded ({error}); check the network, "
            "or pass local files with --train-file and --eval-file"
        ) from error
    except (FileNotFoundError, ValueError) as error:
        check_local_config(name, config, error)
        # A wrong name, config or split string. The library's message lists the valid ones.
        raise UsageError(f"{label}, split {split!r}, could not be loaded: {error}") from error

    if TEXT_COLUMN not in dataset.column_names:
        raise UsageError(
            f"{label}, split {split!r}, has no {TEXT_COLUMN!r} column (columns: "
            f"{', '.join(dataset.column_names)}); use a dataset with a {TEXT_COLUMN!r} column"
        )
    column_type = dataset.features[TEXT_COLUMN]
    if getattr(column_type, "dtype", None) not in ("string", "large_string"):
        raise UsageError(
            f"{label}, split {split!r}: the {TEXT_COLUMN!r} column has the type {column_type}, "
            "not string; use a dataset whose documents are strings"
        )
    return list(dataset[TEXT_COLUMN])


def check_local_config(name: str, config: str | None, error: Exception) -> None:
    """Raise UsageError listing a local dataset folder's configs when `config` is not one of them.

    A folder of plain data files has the single config "default", so the
    default --dataset-config wikitext-2-raw-v1 does not fit it.
    """
    import datasets

    if not config or not Path(name).is_dir():
        return
    try:
        configs = datasets.get_dataset_config_names(name)
    except (FileNotFoundError, ValueError):
        return  # The folder itself is unreadable, and the caller reports the original error.
    if config not in configs:
        raise UsageError(
            f"dataset folder {name} has no config {config!r} (its configs: {', '.join(configs)}); "
            f"pass --dataset-config NAME with one of them, for example --dataset-config {configs[0]}"
        ) from error


def load_text_file(path: Path) -> list[str]:
    """Return the documents of a .txt file (one per line) or a .parquet file (its `text` column).

    Extensions are matched case-insensitively. Lines of a .txt file keep their
    line break, so that documents read from a file end like wikitext's rows on
    the Hub do. Raises UsageError for a folder, another extension, a missing
    file, a .txt file that is not UTF-8, and a file that is not Parquet or has
    no string `text` column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise UsageError(
            f"{path} is a folder, not a file; pass a .txt file (one document per line) "
            f"or a .parquet file with a {TEXT_COLUMN!r} column"
        )
    if suffix not in TEXT_FILE_SUFFIXES:
        raise UsageError(
            f"{path} has the extension {path.suffix or '(none)'!r}; use a .txt file "
            f"(one document per line) or a .parquet file with a {TEXT_COLUMN!r} column"
        )
    if not path.is_file():
        raise UsageError(f"text file {path} not found; check the path")

    if suffix == ".txt":
        return read_txt(path)
    return read_parquet_text_column(path)


def read_txt(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.readlines()
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path} is not valid UTF-8 ({error.reason}); save the text as UTF-8, "
            f"for example with iconv -f OLD_ENCODING -t UTF-8"
        ) from error


def read_parquet_text_column(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except pa.ArrowInvalid as error:
        raise UsageError(
            f"{path} is not a valid Parquet file ({error}); write it with pyarrow or "
            "pandas.DataFrame.to_parquet, or pass a .txt file"
        ) from error

    if TEXT_COLUMN not in schema.names:
        raise UsageError(
            f"{path} has no {TEXT_COLUMN!r} column (columns: {', '.join(schema.names)}); "
            f"write the documents to a column named {TEXT_COLUMN!r}"
        )
    column_type = schema.field(TEXT_COLUMN).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UsageError(
            f"{path}: the {TEXT_COLUMN!r} column has the type {column_type}, not string; "
            "write the documents as strings"
        )
    return pq.read_table(path, columns=[TEXT_COLUMN]).column(TEXT_COLUMN).to_pylist()


def drop_empty_lines(texts: list[str | None]) -> list[str]:
    """Return the documents that contain more than whitespace (wikitext has many blank rows)."""
    return [text for text in texts if text is not None and text.strip()]


def tokenize_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Return the token ids of each document, without padding or truncation."""
    # verbose=False: a document longer than the model's context is fine here,
    # because group_into_blocks cuts the concatenated ids into blocks.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def group_into_blocks(token_ids: list[list[int]], block_size: int, source: str) -> dict[str, list[list[int]]]:
    """Concatenate the documents' token ids and cut them into blocks of block_size tokens.

    Returns {"input_ids": blocks, "labels": copies of the blocks}. Raises
    UsageError when the text has fewer tokens than one block; source names the
    text in that message.
    """
    if block_size < 1:
        raise UsageError(f"--block-size {block_size} is invalid; use a positive number of tokens")

    concatenated = [token_id for ids in token_ids for token_id in ids]
    num_tokens = len(concatenated)
    if num_tokens < block_size:
        raise UsageError(
            f"--block-size {block_size} is larger than the {num_tokens} tokens of {source}; "
            "pass a smaller --block-size or more text"
        )

    num_blocks = num_tokens // block_size
    blocks = [concatenated[i * block_size : (i + 1) * block_size] for i in range(num_blocks)]
    return {"input_ids": blocks, "labels": [list(block) for block in blocks]}


def build_block_dataset(tokenizer, texts: list[str | None], block_size: int, source: str):
    """Return a datasets.Dataset of token blocks with labels, built from raw documents."""
    import datasets

    documents = drop_empty_lines(texts)
    if not documents:
        raise UsageError(
            f"{source} has no text after dropping empty lines; pass text with at least one line "
            "that is not blank"
        )
    logger.info("%s: %d documents, %d empty lines dropped", source, len(documents), len(texts) - len(documents))
    blocks = group_into_blocks(tokenize_texts(tokenizer, documents), block_size, source)
    logger.info("%s: %d blocks of %d tokens", source, len(blocks["input_ids"]), block_size)
    return datasets.Dataset.from_dict(blocks)
