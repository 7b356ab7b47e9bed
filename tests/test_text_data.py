"""Text loading, empty-line dropping, tokenization and block grouping for causal language modelling."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2_fixtures import (  # noqa: F401  (pytest fixtures)
    datasets_cache,
    EVAL_ARTICLES,
    TRAIN_ARTICLES,
    hub_layout_dataset,
    text_files,
    tiny_gpt2_dir,
    wikitext_lines,
)
from mlrepro.data import text
from mlrepro.errors import UsageError


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_gpt2_dir)


def non_empty(lines):
    return [line for line in lines if line.strip()]


def test_txt_file_one_document_per_line(text_files):
    documents = text.load_text_file(text_files["train_txt"])

    assert len(documents) == len(wikitext_lines(TRAIN_ARTICLES))
    assert documents[1] == " = Harbour lighthouse = \n"
    assert all(document.endswith("\n") for document in documents)


def test_txt_and_parquet_same_documents(text_files):
    from_txt = text.drop_empty_lines(text.load_text_file(text_files["train_txt"]))
    from_parquet = text.drop_empty_lines(text.load_text_file(text_files["train_parquet"]))

    assert from_txt == from_parquet
    assert from_txt == non_empty(wikitext_lines(TRAIN_ARTICLES))


def test_text_file_wrong_extension(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text\nhello\n", encoding="utf-8")

    with pytest.raises(UsageError) as error:
        text.load_text_file(path)

    assert "'.csv'" in str(error.value)
    assert ".parquet" in str(error.value)


def test_txt_file_uppercase_extension(text_files, tmp_path):
    path = tmp_path / "train.TXT"
    path.write_bytes(text_files["train_txt"].read_bytes())

    assert text.load_text_file(path) == text.load_text_file(text_files["train_txt"])


def test_text_file_is_folder(tmp_path):
    with pytest.raises(UsageError) as error:
        text.load_text_file(tmp_path)

    assert f"{tmp_path} is a folder, not a file" in str(error.value)
    assert "extension" not in str(error.value)


def test_txt_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))

    with pytest.raises(UsageError) as error:
        text.load_text_file(path)

    assert f"{path} is not valid UTF-8" in str(error.value)
    assert "save the text as UTF-8" in str(error.value)


def test_parquet_int_text_column(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)

    with pytest.raises(UsageError) as error:
        text.load_text_file(path)

    assert f"{path}: the 'text' column has the type int64, not string" in str(error.value)


def test_parquet_invalid_bytes(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("text\nnot parquet\n", encoding="utf-8")

    with pytest.raises(UsageError) as error:
        text.load_text_file(path)

    assert f"{path} is not a valid Parquet file" in str(error.value)


def test_text_file_missing(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        text.load_text_file(tmp_path / "absent.txt")


def test_parquet_without_text_column(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"sentence": ["a line\n"], "id": [1]}), path)

    with pytest.raises(UsageError) as error:
        text.load_text_file(path)

    assert "no 'text' column" in str(error.value)
    assert "sentence, id" in str(error.value)


def test_drop_empty_lines_blank_and_whitespace():
    lines = ["", "\n", " \n", "\t \n", None, " = Title = \n", " A paragraph . \n"]

    assert text.drop_empty_lines(lines) == [" = Title = \n", " A paragraph . \n"]


def test_group_into_blocks_labels_copy():
    blocks = text.group_into_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4, source="test text")

    assert blocks["input_ids"] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert blocks["labels"] == blocks["input_ids"]
    assert blocks["labels"][0] is not blocks["input_ids"][0]


def test_group_into_blocks_exact_multiple():
    blocks = text.group_into_blocks([[1, 2], [3, 4]], block_size=2, source="test text")

    assert blocks["input_ids"] == [[1, 2], [3, 4]]


def test_block_size_larger_than_text():
    with pytest.raises(UsageError) as error:
        text.group_into_blocks([[1, 2, 3], [4, 5, 6]], block_size=64, source="--train-file small.txt")

    message = str(error.value)
    assert "--block-size 64" in message
    assert "6 tokens" in message
    assert "--train-file small.txt" in message


def test_block_dataset_empty_lines_dropped(tiny_tokenizer):
    """Original bug: blank wikitext rows became sequences of padding; here they add no tokens."""
    lines = wikitext_lines(TRAIN_ARTICLES)
    with_blanks = text.build_block_dataset(tiny_tokenizer, lines + ["", " \n", "\n"], 16, "with blanks")
    without_blanks = text.build_block_dataset(tiny_tokenizer, non_empty(lines), 16, "without blanks")

    assert len(with_blanks) == len(without_blanks)
    assert with_blanks["input_ids"] == without_blanks["input_ids"]


@pytest.mark.parametrize("lines", [[], ["\n", " \n", "\t\n"]], ids=["empty", "blank"])
def test_block_dataset_no_text(tiny_tokenizer, lines):
    with pytest.raises(UsageError) as error:
        text.build_block_dataset(tiny_tokenizer, lines, 16, "--train-file blank.txt")

    assert "--train-file blank.txt has no text after dropping empty lines" in str(error.value)


def test_block_dataset_rows(tiny_tokenizer):
    documents = non_empty(wikitext_lines(EVAL_ARTICLES))
    num_tokens = sum(len(ids) for ids in tiny_tokenizer(documents)["input_ids"])

    dataset = text.build_block_dataset(tiny_tokenizer, documents, 16, "eval text")

    assert dataset.column_names == ["input_ids", "labels"]
    assert len(dataset) == num_tokens // 16
    assert all(len(row) == 16 for row in dataset["input_ids"])
    assert dataset["labels"] == dataset["input_ids"]


def test_block_dataset_decodes_to_text(tiny_tokenizer):
    documents = non_empty(wikitext_lines(EVAL_ARTICLES))
    dataset = text.build_block_dataset(tiny_tokenizer, documents, 16, "eval text")

    decoded = tiny_tokenizer.decode([token_id for row in dataset["input_ids"] for token_id in row])

    assert "".join(documents).startswith(decoded)


def test_hub_layout_dataset_split_slice(hub_layout_dataset, datasets_cache):
    documents = text.load_dataset_texts(str(hub_layout_dataset), "wikitext-2-raw-v1", "train[:50%]")
    all_rows = wikitext_lines(TRAIN_ARTICLES)

    assert documents == all_rows[: len(all_rows) // 2]


def test_hub_layout_dataset_validation(hub_layout_dataset, datasets_cache):
    documents = text.load_dataset_texts(str(hub_layout_dataset), "wikitext-2-raw-v1", "validation")

    assert documents == wikitext_lines(EVAL_ARTICLES)


def test_hub_layout_dataset_unknown_config(hub_layout_dataset, datasets_cache):
    with pytest.raises(UsageError) as error:
        text.load_dataset_texts(str(hub_layout_dataset), "wikitext-103-raw-v1", "train")

    assert "wikitext-103-raw-v1" in str(error.value)
    assert "wikitext-2-raw-v1" in str(error.value)


@pytest.fixture
def plain_dataset_folder(tmp_path):
    """A local dataset folder of bare parquet files, without a README, so its only config is "default"."""
    folder = tmp_path / "plain-dataset"
    folder.mkdir()
    pq.write_table(pa.table({"text": wikitext_lines(TRAIN_ARTICLES)}), folder / "train.parquet")
    return folder


def test_plain_folder_named_config(plain_dataset_folder, datasets_cache):
    with pytest.raises(UsageError) as error:
        text.load_dataset_texts(str(plain_dataset_folder), "wikitext-2-raw-v1", "train")

    message = str(error.value)
    assert f"{plain_dataset_folder} has no config 'wikitext-2-raw-v1'" in message
    assert "(its configs: default)" in message
    assert "--dataset-config default" in message


def test_plain_folder_default_config(plain_dataset_folder, datasets_cache):
    documents = text.load_dataset_texts(str(plain_dataset_folder), "default", "train")

    assert documents == wikitext_lines(TRAIN_ARTICLES)


def test_dataset_int_text_column(tmp_path, datasets_cache):
    folder = tmp_path / "ints-dataset"
    folder.mkdir()
    pq.write_table(pa.table({"text": [1, 2, 3]}), folder / "train.parquet")

    with pytest.raises(UsageError) as error:
        text.load_dataset_texts(str(folder), None, "train")

    assert "the 'text' column has the type Value('int64')" in str(error.value)


def test_hub_layout_dataset_unknown_split(hub_layout_dataset, datasets_cache):
    with pytest.raises(UsageError, match="'test'"):
        text.load_dataset_texts(str(hub_layout_dataset), "wikitext-2-raw-v1", "test")


def test_hub_dataset_offline_not_cached(datasets_cache):
    with pytest.raises(UsageError) as error:
        text.load_dataset_texts("mlrepro-test/no-such-dataset", None, "train")

    assert "not in the local Hugging Face cache" in str(error.value)
    assert "--train-file" in str(error.value)
