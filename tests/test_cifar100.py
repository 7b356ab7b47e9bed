"""The CIFAR-100 python-format loader, on folders written in the official pickle format."""

import os
import pickle

import numpy as np
import pytest
from http_fixtures import closed_port_url
from cifar_fixtures import random_cifar100_folder, random_split, write_cifar100_folder, write_split

from mlrepro.data import cifar100
from mlrepro.errors import UsageError


@pytest.fixture
def cifar_dir(tmp_path):
    return random_cifar100_folder(tmp_path / "cifar-100-python", train_count=40, test_count=20)


def test_load_split_shapes(cifar_dir):
    images, labels = cifar100.load_split(cifar_dir, "train")
    assert images.shape == (40, 32, 32, 3)
    assert images.dtype == np.uint8
    assert labels.shape == (40,)
    assert labels.dtype == np.int64


def test_load_split_matches_written(cifar_dir):
    expected_images, expected_labels = random_split(20, seed=1)
    images, labels = cifar100.load_split(cifar_dir, "test")
    np.testing.assert_array_equal(images, expected_images)
    assert labels.tolist() == expected_labels


def test_load_split_reads_chw_rows(tmp_path):
    # One row: 1024 red values, then 1024 green, then 1024 blue.
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    row[1] = 99  # red channel of the pixel in row 0, column 1
    batch = {b"data": row[None, :], b"fine_labels": [7]}
    (tmp_path / "train").write_bytes(pickle.dumps(batch, protocol=4))

    images, labels = cifar100.load_split(tmp_path, "train")
    assert images[0, 0, 0].tolist() == [10, 20, 30]
    assert images[0, 0, 1].tolist() == [99, 20, 30]
    assert images[0, 31, 31].tolist() == [10, 20, 30]
    assert labels.tolist() == [7]


def test_load_split_limit(cifar_dir):
    all_images, all_labels = cifar100.load_split(cifar_dir, "train")
    images, labels = cifar100.load_split(cifar_dir, "train", limit=5)
    assert images.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(images, all_images[:5])
    np.testing.assert_array_equal(labels, all_labels[:5])


def test_load_split_limit_too_large(cifar_dir):
    with pytest.raises(UsageError) as error:
        cifar100.load_split(cifar_dir, "train", limit=41)
    assert "--train-limit 41" in str(error.value)
    assert "40 images" in str(error.value)


def test_load_split_label_out_of_range(tmp_path):
    images, _ = random_split(3, seed=0)
    write_split(tmp_path / "train", images, [0, 5, 100])
    with pytest.raises(UsageError, match="labels from 0 to 100"):
        cifar100.load_split(tmp_path, "train")


def test_load_split_wrong_data_shape(tmp_path):
    batch = {b"data": np.zeros((2, 1024), np.uint8), b"fine_labels": [0, 1]}
    (tmp_path / "train").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(UsageError, match=r"expected uint8 \(N, 3072\)"):
        cifar100.load_split(tmp_path, "train")


class WritesMarker:
    """Unpickling this runs Path.touch: the kind of call a tampered pickle makes."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_read_pickle_rejects_other_globals(tmp_path):
    marker = tmp_path / "unpickling-ran-code"
    path = tmp_path / "train"
    path.write_bytes(pickle.dumps({b"data": WritesMarker(marker)}, protocol=4))
    with pytest.raises(UsageError, match="not allowed in a CIFAR-100 pickle"):
        cifar100.read_pickle(path)
    assert not marker.exists()


def test_scale_pixels_range():
    images = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    scaled = cifar100.scale_pixels(images)
    assert scaled.dtype == np.float32
    assert scaled.min() == 0.0
    assert scaled.max() == 1.0
    assert scaled[0, 0, 0, 1] == pytest.approx(128 / 255)


def test_label_names(cifar_dir):
    names = cifar100.load_label_names(cifar_dir)
    assert len(names) == 100
    assert names[3] == "fine_03"


def test_check_folder_missing_files(tmp_path):
    write_cifar100_folder(tmp_path, random_split(2, seed=0), random_split(2, seed=1))
    (tmp_path / "meta").unlink()
    with pytest.raises(UsageError) as error:
        cifar100.check_folder(tmp_path)
    assert f"--data-dir {tmp_path} is missing meta" in str(error.value)
    assert "train, test, meta" in str(error.value)


def test_check_folder_not_a_folder(tmp_path):
    with pytest.raises(UsageError, match="is not a folder"):
        cifar100.check_folder(tmp_path / "absent")


def test_keras_cache_dir_honours_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert cifar100.keras_cache_dir() == tmp_path / "keras" / "datasets"


def test_keras_cache_dir_default(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cifar100.keras_cache_dir() == tmp_path / ".keras" / "datasets"


def test_download_failure_hints_data_dir(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UsageError) as error:
        cifar100.download_cifar100(cache, url=closed_port_url("cifar-100-python.tar.gz"))
    message = str(error.value)
    assert "could not download" in message
    assert f"copy the archive to {cache / 'cifar-100-python-target_archive'}" in message
    assert "pass --data-dir with an extracted cifar-100-python folder" in message


def test_download_keras_home_is_file(tmp_path, monkeypatch):
    keras_home = tmp_path / "keras-home"
    keras_home.write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    with pytest.raises(UsageError) as error:
        cifar100.download_cifar100(url=closed_port_url("cifar-100-python.tar.gz"))
    assert f"{keras_home / 'datasets'} could not be created" in str(error.value)
    assert "set KERAS_HOME to a writable folder" in str(error.value)


def test_download_keras_home_read_only(tmp_path, monkeypatch):
    keras_home = tmp_path / "keras-home"
    (keras_home / "datasets").mkdir(parents=True)
    (keras_home / "datasets").chmod(0o555)
    if os.access(keras_home / "datasets", os.W_OK):
        pytest.skip("permission bits do not apply to this user (root)")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    with pytest.raises(UsageError) as error:
        cifar100.download_cifar100(url=closed_port_url("cifar-100-python.tar.gz"))
    assert f"{keras_home / 'datasets'} is not writable" in str(error.value)
    assert "pass --data-dir" in str(error.value)
