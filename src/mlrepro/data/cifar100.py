"""CIFAR-100 in its python format: download it once into the Keras cache, or read an extracted folder.

The official archive, cifar-100-python.tar.gz, contains a `cifar-100-python`
folder with three pickles:

    train   {b"data": uint8 array (50000, 3072), b"fine_labels": [int], ...}
    test    {b"data": uint8 array (10000, 3072), b"fine_labels": [int], ...}
    meta    {b"fine_label_names": [bytes], b"coarse_label_names": [bytes]}

Each row of b"data" is one 32x32 image in CHW order: 1024 red values, then
1024 green, then 1024 blue, each plane row by row. Labels are 0..99.

The cache uses the layout of keras 3's `keras.datasets.cifar100.load_data()`
(checked against keras 3.15), so a dataset that Keras already downloaded is
reused, and the other way round:

    $KERAS_HOME/datasets/cifar-100-python-target_archive            the archive
    $KERAS_HOME/datasets/cifar-100-python-target/cifar-100-python/  the folder

KERAS_HOME defaults to ~/.keras.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np

from mlrepro.data.download import DownloadError, download_file, extract_tar
from mlrepro.errors import UsageError

logger = logging.getLogger(__name__)

# The URL and sha256 that keras 3.15 pins in keras/src/datasets/cifar100.py.
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_SHA256 = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"

FOLDER_NAME = "cifar-100-python"
SPLIT_FILES = ("train", "test", "meta")
NUM_CLASSES = 100
IMAGE_SHAPE = (32, 32, 3)

# Names that keras.utils.get_file gives the archive and its extraction folder
# for fname="cifar-100-python-target" with extract=True.
KERAS_ARCHIVE_NAME = "cifar-100-python-target_archive"
KERAS_EXTRACT_NAME = "cifar-100-python-target"

# Unpickling runs code named in the file, so only the globals that rebuild a
# numpy array are allowed (as keras 3.15's cifar loader does). Both the
# numpy < 2 and numpy >= 2 module names are listed.
ALLOWED_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }
)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rejects every global except those that rebuild a numpy array."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-100 pickle")


def keras_cache_dir() -> Path:
    """Return Keras' dataset cache: $KERAS_HOME/datasets, or ~/.keras/datasets."""
    keras_home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(keras_home) / "datasets"


def download_cifar100(
    cache_dir: Path | None = None, url: str = CIFAR100_URL, sha256: str = CIFAR100_SHA256
) -> Path:
    """Return the extracted `cifar-100-python` folder in the cache, downloading the archive first if needed.

    The archive's sha256 is checked before it is opened. Raises DownloadError
    when the download fails, the sha256 does not match or the archive is unsafe.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else keras_cache_dir()
    extract_dir = cache_dir / KERAS_EXTRACT_NAME
    folder = extract_dir / FOLDER_NAME
    if not missing_files(folder):
        logger.info("Using CIFAR-100 from the Keras cache: %s", folder)
        return folder

    make_cache_dir(cache_dir)
    archive = cache_dir / KERAS_ARCHIVE_NAME
    try:
        download_file(url, archive, sha256)
    except DownloadError as error:
        raise DownloadError(
            f"{str(error).rstrip('.')}. Without the network, copy the archive to {archive} "
            f"(the Keras cache {cache_dir}), or pass --data-dir with an extracted {FOLDER_NAME} folder"
        ) from error
    if extract_dir.exists():
        # Left by an older or interrupted extraction that lacks some files.
        logger.warning("Replacing the incomplete folder %s", extract_dir)
        shutil.rmtree(extract_dir)
    extract_tar(archive, extract_dir)
    missing = missing_files(folder)
    if missing:
        expected = ", ".join(f"{FOLDER_NAME}/{name}" for name in missing)
        raise DownloadError(f"{archive} does not contain {expected}")
    return folder


def make_cache_dir(cache_dir: Path) -> None:
    """Create the cache folder, raising UsageError when it cannot be created or written to."""
    fix = f"set KERAS_HOME to a writable folder, or pass --data-dir with an extracted {FOLDER_NAME} folder"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"the CIFAR-100 cache folder {cache_dir} could not be created ({error}); {fix}"
        ) from error
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise UsageError(f"the CIFAR-100 cache folder {cache_dir} is not writable; {fix}")


def missing_files(folder: Path) -> list[str]:
    """Return which of train, test and meta are not files in folder."""
    return [name for name in SPLIT_FILES if not (folder / name).is_file()]


def check_folder(data_dir: Path) -> None:
    """Raise UsageError unless data_dir is an extracted cifar-100-python folder."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UsageError(
            f"--data-dir {data_dir} is not a folder; pass the extracted {FOLDER_NAME} folder, "
            f"which contains the files {', '.join(SPLIT_FILES)}"
        )
    missing = missing_files(data_dir)
    if missing:
        raise UsageError(
            f"--data-dir {data_dir} is missing {', '.join(missing)}; a {FOLDER_NAME} folder contains "
            f"the files {', '.join(SPLIT_FILES)}"
        )


def read_pickle(path: Path) -> dict:
    """Read one CIFAR pickle. encoding="bytes" loads the str keys of the official Python 2 files as bytes."""
    try:
        with open(path, "rb") as stream:
            return NumpyOnlyUnpickler(stream, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise UsageError(f"{path} is not a CIFAR-100 python-format pickle: {error}") from error


def load_split(data_dir: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load the first `limit` images of a split ("train" or "test"), or all of them.

    Returns images as uint8 (N, 32, 32, 3) and fine labels as int64 (N,).
    Raises UsageError when limit exceeds the split or the file is malformed.
    """
    path = Path(data_dir) / split
    batch = read_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"fine_labels" not in batch:
        raise UsageError(f"{path} is missing the keys b'data' and b'fine_labels' of a CIFAR-100 pickle")

    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"fine_labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != np.prod(IMAGE_SHAPE):
        raise UsageError(f"{path}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if len(labels) != len(data):
        raise UsageError(f"{path} has {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise UsageError(
            f"{path} has labels from {labels.min()} to {labels.max()}, but CIFAR-100 labels are 0 to 99"
        )

    if limit is not None:
        if limit > len(data):
            raise UsageError(
                f"--{split}-limit {limit} is larger than the {split} split of {data_dir} "
                f"({len(data)} images); pass at most {len(data)} or leave the limit out"
            )
        data, labels = data[:limit], labels[:limit]

    # (N, 3072) -> (N, 3, 32, 32) in CHW order -> (N, 32, 32, 3) as Keras expects.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def load_label_names(data_dir: Path) -> list[str]:
    """Return the 100 fine label names from the meta file, in label order."""
    path = Path(data_dir) / "meta"
    meta = read_pickle(path)
    if not isinstance(meta, dict) or b"fine_label_names" not in meta:
        raise UsageError(f"{path} is missing the key b'fine_label_names' of a CIFAR-100 meta pickle")
    return [name.decode("utf-8") for name in meta[b"fine_label_names"]]


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """Return uint8 pixels as float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0
