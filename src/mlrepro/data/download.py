"""Download a file once into a cache, check its sha256 before anything opens it, extract tars safely.

    archive = download_file(url, cache_dir / "data.tar.gz", sha256)
    folder = extract_tar(archive, cache_dir / "data")

Standard library only. A download is written to `<name>.part` and renamed to
its final name only after its sha256 matches, so a file at the final name has
always been checked. Extraction checks every member of the archive before it
writes anything, and extracts into a temporary folder that is renamed into
place, so an interrupted extraction leaves no half-filled folder behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from mlrepro.errors import UsageError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
PROGRESS_INTERVAL_SECONDS = 5.0


class DownloadError(UsageError):
    """A download failed, its sha256 did not match, or its archive is unsafe to extract."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, destination: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download url to destination unless a file with the expected sha256 is already there.

    Raises DownloadError when the server cannot be reached or the sha256 does
    not match. In both cases nothing is left at destination.
    """
    destination = Path(destination)
    if destination.exists():
        if sha256_of(destination) == sha256:
            logger.info("Using cached %s (sha256 checked)", destination)
            return destination
        logger.warning("Cached %s does not have the sha256 %s; downloading it again", destination, sha256)
        destination.unlink()

    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    logger.info("Downloading %s to %s", url, destination)
    try:
        fetch(url, partial, timeout)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {error}") from error

    actual = sha256_of(partial)
    if actual != sha256:
        partial.unlink()
        raise DownloadError(
            f"{url} has sha256 {actual}, expected {sha256}; the file was deleted unopened. "
            "Try again later, or download and check it by hand."
        )
    partial.replace(destination)
    return destination


def fetch(url: str, path: Path, timeout: float) -> None:
    """Stream url into path, logging progress every few seconds."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as stream:
        total_bytes = int(response.headers.get("Content-Length") or 0)
        received_bytes = 0
        last_report = time.monotonic()
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            stream.write(chunk)
            received_bytes += len(chunk)
            if time.monotonic() - last_report >= PROGRESS_INTERVAL_SECONDS:
                logger.info("Downloaded %s", progress(received_bytes, total_bytes))
                last_report = time.monotonic()
    logger.info("Downloaded %s", progress(received_bytes, total_bytes))


def progress(received_bytes: int, total_bytes: int) -> str:
    received = f"{received_bytes / 1e6:.1f} MB"
    if total_bytes:
        return f"{received} of {total_bytes / 1e6:.1f} MB ({100 * received_bytes / total_bytes:.0f}%)"
    return received


def extract_tar(archive: Path, destination: Path) -> Path:
    """Extract a (compressed) tar archive into destination, which must not exist yet, and return destination.

    Raises DownloadError, before writing anything, when a member has an
    absolute path, a `..` component, is a link that leads outside the archive,
    or is a device or FIFO.
    """
    archive, destination = Path(archive), Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} already exists; remove it to extract {archive} again")

    staging = destination.with_name(f"{destination.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member, archive)
            # The "data" filter repeats these checks inside tarfile and also drops
            # setuid bits and owners (Python 3.11.4 and later).
            tar.extractall(staging, members=members, filter="data")
        staging.replace(destination)
    except (tarfile.TarError, EOFError) as error:
        raise DownloadError(f"{archive} is not a readable tar archive: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    logger.info("Extracted %s to %s", archive, destination)
    return destination


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Raise DownloadError unless member stays inside the extraction folder."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise DownloadError(f"{archive} contains the unsafe path {member.name!r}; nothing was extracted")

    if member.issym() or member.islnk():
        # A symlink's target is relative to the folder that contains the link, and a
        # hard link's target is relative to the archive root.
        start = str(name.parent) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(start, member.linkname))
        if posixpath.isabs(member.linkname) or target == ".." or target.startswith("../"):
            raise DownloadError(
                f"{archive} contains the link {member.name!r} -> {member.linkname!r}, which leads outside "
                "the archive; nothing was extracted"
            )
    elif not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive} contains {member.name!r}, a device or FIFO; nothing was extracted")
