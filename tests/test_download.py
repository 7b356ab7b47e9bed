"""Downloading CIFAR-100 into the Keras cache from a local HTTP server, with sha256 and safe extraction."""

import tarfile

import pytest
from http_fixtures import file_server  # noqa: F401  (pytest fixture)
from cifar_fixtures import cifar100_archive, random_cifar100_folder, write_tar_gz

from mlrepro.data import cifar100
from mlrepro.data.download import DownloadError, download_file, extract_tar, sha256_of


@pytest.fixture
def server(file_server):  # noqa: F811
    """Return (base URL, served folder, requests) of the shared local file server."""
    return file_server.base_url, file_server.folder, file_server.requests


@pytest.fixture
def served_archive(tmp_path, server):
    """A tiny cifar-100-python.tar.gz on the server; yields (URL, sha256, requests)."""
    base_url, served, requests = server
    folder = random_cifar100_folder(tmp_path / "source" / "cifar-100-python", train_count=12, test_count=6)
    archive = cifar100_archive(served / "cifar-100-python.tar.gz", folder)
    return f"{base_url}/cifar-100-python.tar.gz", sha256_of(archive), requests


def test_download_good_hash_loads(tmp_path, served_archive):
    url, sha256, _ = served_archive
    cache = tmp_path / "cache"
    folder = cifar100.download_cifar100(cache, url=url, sha256=sha256)
    images, labels = cifar100.load_split(folder, "train")
    assert folder == cache / "cifar-100-python-target" / "cifar-100-python"
    assert (cache / "cifar-100-python-target_archive").is_file()
    assert images.shape == (12, 32, 32, 3)
    assert len(labels) == 12


def test_download_reuses_cached_folder(tmp_path, served_archive):
    url, sha256, requests = served_archive
    first = cifar100.download_cifar100(tmp_path / "cache", url=url, sha256=sha256)
    second = cifar100.download_cifar100(tmp_path / "cache", url=url, sha256=sha256)
    assert second == first
    assert requests == ["/cifar-100-python.tar.gz"]


def test_download_reextracts_cached_archive(tmp_path, served_archive):
    url, sha256, requests = served_archive
    folder = cifar100.download_cifar100(tmp_path / "cache", url=url, sha256=sha256)
    (folder / "test").unlink()
    again = cifar100.download_cifar100(tmp_path / "cache", url=url, sha256=sha256)
    assert (again / "test").is_file()
    assert len(requests) == 1


def test_download_honours_keras_home(tmp_path, served_archive, monkeypatch):
    url, sha256, _ = served_archive
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    folder = cifar100.download_cifar100(url=url, sha256=sha256)
    assert folder == tmp_path / "keras-home" / "datasets" / "cifar-100-python-target" / "cifar-100-python"
    assert (folder / "meta").is_file()


def test_download_wrong_hash_rejected(tmp_path, served_archive, monkeypatch):
    url, _, _ = served_archive
    opened = []
    monkeypatch.setattr(tarfile, "open", lambda *args, **kwargs: opened.append(args))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as error:
        cifar100.download_cifar100(cache, url=url, sha256="0" * 64)
    assert f"expected {'0' * 64}" in str(error.value)
    assert "deleted unopened" in str(error.value)
    assert opened == []
    assert sorted(path.name for path in cache.iterdir()) == []


def test_cached_archive_wrong_hash_replaced(tmp_path, served_archive):
    url, sha256, requests = served_archive
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "cifar-100-python-target_archive").write_bytes(b"truncated download")
    folder = cifar100.download_cifar100(cache, url=url, sha256=sha256)
    assert sha256_of(cache / "cifar-100-python-target_archive") == sha256
    assert (folder / "train").is_file()
    assert len(requests) == 1


def test_download_unreachable_server(tmp_path, server):
    base_url, _, _ = server
    with pytest.raises(DownloadError, match="could not download"):
        download_file(f"{base_url}/absent.tar.gz", tmp_path / "absent.tar.gz", "0" * 64)
    assert not (tmp_path / "absent.tar.gz").exists()
    assert not (tmp_path / "absent.tar.gz.part").exists()


def serve_archive(server, name, files, links=None):
    """Put an archive on the server; return its URL and sha256."""
    base_url, served, _ = server
    archive = write_tar_gz(served / name, files, links)
    return f"{base_url}/{name}", sha256_of(archive)


def test_download_rejects_parent_path(tmp_path, server):
    url, sha256 = serve_archive(
        server, "evil.tar.gz", {"cifar-100-python/train": b"x", "cifar-100-python/../../evil": b"owned"}
    )
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="unsafe path 'cifar-100-python/../../evil'"):
        cifar100.download_cifar100(cache, url=url, sha256=sha256)
    assert not (tmp_path / "evil").exists()
    assert not (cache / "cifar-100-python-target").exists()


def test_download_rejects_absolute_path(tmp_path, server):
    outside = tmp_path / "absolute-evil"
    url, sha256 = serve_archive(server, "absolute.tar.gz", {str(outside): b"owned"})
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="unsafe path"):
        cifar100.download_cifar100(cache, url=url, sha256=sha256)
    assert not outside.exists()
    assert not (cache / "cifar-100-python-target").exists()


def test_download_archive_missing_split(tmp_path, server):
    url, sha256 = serve_archive(server, "partial.tar.gz", {"cifar-100-python/train": b"x"})
    with pytest.raises(DownloadError, match="does not contain cifar-100-python/test, cifar-100-python/meta"):
        cifar100.download_cifar100(tmp_path / "cache", url=url, sha256=sha256)


def test_extract_rejects_symlink_outside(tmp_path):
    files = {"cifar-100-python/meta": b"x"}
    links = {"cifar-100-python/train": "../../outside"}
    archive = write_tar_gz(tmp_path / "link.tar.gz", files, links)
    with pytest.raises(DownloadError, match="leads outside the archive"):
        extract_tar(archive, tmp_path / "extracted")
    assert not (tmp_path / "extracted").exists()


def test_extract_allows_symlink_inside(tmp_path):
    archive = write_tar_gz(
        tmp_path / "link.tar.gz", {"data/meta": b"names"}, links={"data/sub/meta-link": "../meta"}
    )
    destination = extract_tar(archive, tmp_path / "extracted")
    assert (destination / "data" / "sub" / "meta-link").read_bytes() == b"names"


def test_extract_leaves_no_staging_folder(tmp_path):
    archive = write_tar_gz(tmp_path / "evil.tar.gz", {"ok": b"x", "../evil": b"owned"})
    with pytest.raises(DownloadError):
        extract_tar(archive, tmp_path / "extracted")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["evil.tar.gz"]
