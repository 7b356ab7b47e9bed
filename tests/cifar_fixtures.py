"""Write CIFAR-100 python-format folders and archives for the tests.

The pickles have the keys and array layout of the official files (b"data"
uint8 (N, 3072) in CHW order, b"fine_labels", b"coarse_labels", b"filenames",
b"batch_label"; meta with the 100 fine and 20 coarse label names). The
official files are Python 2 pickles, which load with bytes keys under
encoding="bytes"; protocol 4 gives the same keys and uses the same three
numpy globals to rebuild the array.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np


def images_to_rows(images: np.ndarray) -> np.ndarray:
    """Turn uint8 (N, 32, 32, 3) images into CIFAR rows: (N, 3072) in CHW order."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_split(path: Path, images: np.ndarray, labels: list[int]) -> None:
    batch = {
        b"batch_label": path.name.encode(),
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(images))],
        b"fine_labels": [int(label) for label in labels],
        b"coarse_labels": [int(label) // 5 for label in labels],
        b"data": images_to_rows(images),
    }
    path.write_bytes(pickle.dumps(batch, protocol=4))


def write_meta(path: Path) -> None:
    meta = {
        b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
    }
    path.write_bytes(pickle.dumps(meta, protocol=4))


def write_cifar100_folder(
    folder: Path, train: tuple[np.ndarray, list[int]], test: tuple[np.ndarray, list[int]]
) -> Path:
    """Write train, test and meta pickles into folder; return folder."""
    folder.mkdir(parents=True, exist_ok=True)
    write_split(folder / "train", *train)
    write_split(folder / "test", *test)
    write_meta(folder / "meta")
    return folder


def random_split(count: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """Return count random uint8 (32, 32, 3) images and labels in 0..99."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, size=count).tolist()
    return images, labels


def random_cifar100_folder(folder: Path, train_count: int = 40, test_count: int = 20) -> Path:
    """Write a cifar-100-python folder of random images."""
    return write_cifar100_folder(folder, random_split(train_count, seed=0), random_split(test_count, seed=1))


def write_tar_gz(archive: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """Write a .tar.gz with the given member names and contents, plus symlinks name -> target."""
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return archive


def cifar100_archive(archive: Path, folder: Path) -> Path:
    """Pack a cifar-100-python folder into a .tar.gz as the official archive does."""
    files = {f"cifar-100-python/{name}": (folder / name).read_bytes() for name in ("train", "test", "meta")}
    return write_tar_gz(archive, files)
