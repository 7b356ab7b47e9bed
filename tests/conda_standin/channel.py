"""Build a local conda channel and a local PyPI index of tiny packages, for offline conda-lock tests.

The conda channel is a folder of hand-built `.tar.bz2` packages, indexed by
py-rattler (`rattler.index.index_fs`), which writes each subdir's repodata.json:

    python 3.11.9   one build per platform in PLATFORMS (a shell script as bin/python)
    pip 24.0        noarch; conda-lock adds it whenever a file has a `pip:` section
    tinylib 1.0/2.0 noarch; a runtime conda package
    tinytest 0.1    noarch; a test-only conda package

The PyPI index is a PEP 503 "simple" folder of pure-Python wheels, served by
`python -m http.server` on loopback, because conda-lock's pip solver reads
package indexes over HTTP only:

    tinywheel 1.0/2.0, tinytestwheel 0.1 (requires tinywheel)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

PLATFORMS = ("osx-arm64", "linux-64", "linux-aarch64")

# A fixed package timestamp (ms since the epoch) keeps the channel reproducible;
# rattler's solver requires one.
TIMESTAMP_MS = 1_700_000_000_000

WHEELS = {
    ("tinywheel", "1.0"): [],
    ("tinywheel", "2.0"): [],
    ("tinytestwheel", "0.1"): ["tinywheel>=1"],
}


def build_conda_package(
    channel: Path,
    subdir: str,
    name: str,
    version: str,
    files: dict[str, str],
    depends: tuple[str, ...] = (),
) -> Path:
    """Write `<channel>/<subdir>/<name>-<version>-0.tar.bz2` holding `files` (path -> text)."""
    build = "0"
    index = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": list(depends),
        "license": "MIT",
        "subdir": subdir,
        "timestamp": TIMESTAMP_MS,
    }
    if subdir == "noarch":
        index["noarch"] = "generic"

    payloads = {path: text.encode() for path, text in files.items()}
    paths = {
        "paths_version": 1,
        "paths": [
            {
                "_path": path,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size_in_bytes": len(data),
            }
            for path, data in sorted(payloads.items())
        ],
    }
    members = {
        "info/index.json": json.dumps(index, indent=2).encode(),
        "info/paths.json": json.dumps(paths, indent=2).encode(),
        "info/files": "".join(f"{path}\n" for path in sorted(payloads)).encode(),
        **payloads,
    }

    target = channel / subdir / f"{name}-{version}-{build}.tar.bz2"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:bz2") as archive:
        for member_name, data in members.items():
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            info.mtime = TIMESTAMP_MS // 1000
            info.mode = 0o755 if member_name.startswith("bin/") else 0o644
            archive.addfile(info, io.BytesIO(data))
    return target


def build_channel(channel: Path) -> Path:
    """Build and index the tiny conda channel in `channel`; return the folder."""
    import rattler.index  # test-only dependency

    python_script = "#!/bin/sh\necho 'Python 3.11.9 (mlrepro test channel)'\n"
    for subdir in PLATFORMS:
        build_conda_package(channel, subdir, "python", "3.11.9", {"bin/python": python_script})
    build_conda_package(
        channel, "noarch", "pip", "24.0", {"share/pip/VERSION": "24.0\n"}, depends=("python >=3.9",)
    )
    for version in ("1.0", "2.0"):
        build_conda_package(channel, "noarch", "tinylib", version, {"share/tinylib/VERSION": f"{version}\n"})
    build_conda_package(
        channel, "noarch", "tinytest", "0.1", {"share/tinytest/VERSION": "0.1\n"}, depends=("tinylib",)
    )

    asyncio.run(rattler.index.index_fs(channel, write_zst=False, write_shards=False))
    return channel


def build_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    """Write a pure-Python wheel with one module `<name>.py` that stores its version."""
    dist_info = f"{name}-{version}.dist-info"
    metadata = "".join(
        [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
        + [f"Requires-Dist: {requirement}\n" for requirement in requires]
    )
    files = {
        f"{name}.py": f'__version__ = "{version}"\n',
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: mlrepro-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record_lines = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(text.encode())}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = "\n".join(record_lines) + "\n"

    target = folder / f"{name}-{version}-py3-none-any.whl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0)), text)
    return target


def build_pypi_index(root: Path) -> Path:
    """Write a PEP 503 index of the tiny wheels under `root/simple`; return `root`."""
    packages = root / "packages"
    links: dict[str, list[str]] = {}
    for (name, version), requires in WHEELS.items():
        wheel = build_wheel(packages, name, version, requires)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        anchor = f'<a href="../../packages/{wheel.name}#sha256={digest}">{wheel.name}</a>'
        links.setdefault(name, []).append(anchor)

    for name, anchors in links.items():
        page = root / "simple" / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<!DOCTYPE html>\n<html><body>\n" + "\n".join(anchors) + "\n</body></html>\n")
    index = "".join(f'<a href="{name}/">{name}</a>\n' for name in links)
    (root / "simple" / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{index}</body></html>\n")
    return root
