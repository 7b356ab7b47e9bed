"""A conda stand-in built on py-rattler, for driving the real conda-lock CLI offline in tests.

It implements only the commands that conda-lock 4.0.3 issues (conda_solver.py,
invoke_conda.py, conda_lock.py), with the output that conda-lock parses:

    conda --version
    conda info --json
    conda create --prefix P --dry-run --json [--override-channels] --channel URL... SPEC...
        solves for the platform in $CONDA_SUBDIR, with the virtual packages that
        conda-lock sets in $CONDA_OVERRIDE_*, and prints the FETCH and LINK actions
    conda create --quiet --file EXPLICIT --yes --prefix P
        installs the URLs of an explicit (@EXPLICIT) file
    conda run --prefix P pip install --no-deps -r REQUIREMENTS
        installs `name @ URL#sha256=...` wheels into the prefix's site-packages
    conda run --prefix P COMMAND...
        runs COMMAND with the prefix's bin/ first on PATH

It is a test double: it reads only local file:// channels and loopback URLs,
and it never runs package scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import rattler
from rattler import Channel, GenericVirtualPackage, PackageName, SparseRepoData, Version
from rattler.explicit_environment import ExplicitEnvironmentSpec
from rattler.package import BuildString

CONDA_VERSION = "24.1.2"


def main(argv: list[str]) -> int:
    if argv == ["--version"]:
        print(f"conda {CONDA_VERSION}")
        return 0
    if not argv:
        print("usage: conda {--version,info,create,run} ...", file=sys.stderr)
        return 2

    command, arguments = argv[0], argv[1:]
    if command == "info":
        return info(arguments)
    if command == "create":
        return create(arguments)
    if command == "run":
        return run(arguments)
    print(f"conda stand-in: command {command!r} is not supported", file=sys.stderr)
    return 2


def info(arguments: list[str]) -> int:
    if arguments != ["--json"]:
        print(f"conda stand-in: only `info --json` is supported, got {arguments}", file=sys.stderr)
        return 2
    pkgs_dir = os.environ.get("CONDA_PKGS_DIRS") or str(Path(tempfile.gettempdir()) / "conda-standin-pkgs")
    print(json.dumps({"conda_version": CONDA_VERSION, "platform": target_subdir(), "pkgs_dirs": [pkgs_dir]}))
    return 0


def create(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="conda create")
    parser.add_argument("--prefix", "-p", required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--override-channels", action="store_true")
    parser.add_argument("--channel", "-c", action="append", default=[])
    parser.add_argument("--file")
    parser.add_argument("--quiet", "-q", action="store_true")
    parser.add_argument("--yes", "-y", action="store_true")
    parser.add_argument("--copy", action="store_true")
    parser.add_argument("specs", nargs="*")
    options = parser.parse_args(arguments)

    if options.file:
        install_explicit(Path(options.file), Path(options.prefix))
        return 0
    if not (options.dry_run and options.json):
        print("conda stand-in: `create SPEC...` needs --dry-run --json", file=sys.stderr)
        return 2
    print(json.dumps(dry_run(options.channel, options.specs, options.prefix), indent=2))
    return 0


def target_subdir() -> str:
    """Return the platform to solve for: $CONDA_SUBDIR, as conda-lock sets it, else the host's."""
    return os.environ.get("CONDA_SUBDIR") or str(rattler.Platform.current())


def virtual_packages(subdir: str) -> list[GenericVirtualPackage]:
    """Return the virtual packages of `subdir` that conda-lock requested through $CONDA_OVERRIDE_*."""
    packages = []
    if not subdir.startswith("win"):
        packages.append(("__unix", "0", "0"))
    for variable, value in sorted(os.environ.items()):
        if not variable.startswith("CONDA_OVERRIDE_") or not value:
            continue
        name = "__" + variable.removeprefix("CONDA_OVERRIDE_").lower()
        if name == "__archspec":
            packages.append((name, "1", value))
        else:
            packages.append((name, value, "0"))
    return [
        GenericVirtualPackage(PackageName(name), Version(version), BuildString(build))
        for name, version, build in packages
    ]


def dry_run(channels: list[str], specs: list[str], prefix: str) -> dict:
    """Solve `specs` and return conda's `create --dry-run --json` report."""
    subdir = target_subdir()
    with tempfile.TemporaryDirectory(prefix="conda-standin-") as cache:
        records = asyncio.run(
            rattler.solve(
                sources=channels,
                specs=specs,
                gateway=rattler.Gateway(cache_dir=cache),
                platforms=[subdir, "noarch"],
                virtual_packages=virtual_packages(subdir),
            )
        )
    fetch = [json.loads(record.to_json()) for record in records]
    link = [
        {
            "base_url": entry["channel"],
            "channel": entry["channel"],
            "dist_name": entry["fn"].removesuffix(".tar.bz2").removesuffix(".conda"),
            "name": entry["name"],
            "platform": entry["subdir"],
            "version": entry["version"],
        }
        for entry in fetch
    ]
    return {"actions": {"FETCH": fetch, "LINK": link, "PREFIX": prefix}, "dry_run": True, "success": True}


def record_for_url(url: str) -> rattler.RepoDataRecord:
    """Look a package URL up in its local channel's repodata.json."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "file":
        raise ValueError(f"conda stand-in reads file:// channels only, got {url}")
    path = PurePosixPath(urllib.parse.unquote(parsed.path))
    subdir, file_name = path.parent.name, path.name
    channel_url = f"file://{path.parent.parent}"
    repodata = SparseRepoData(Channel(channel_url), subdir, str(path.parent / "repodata.json"))
    name = file_name.rsplit("-", 2)[0]
    for record in repodata.load_records(PackageName(name)):
        if record.file_name == file_name:
            return record
    raise LookupError(f"{file_name} is not in {path.parent}/repodata.json")


def install_explicit(explicit_file: Path, prefix: Path) -> None:
    """Install every package URL of an explicit environment file into `prefix`."""
    spec = ExplicitEnvironmentSpec.from_path(explicit_file)
    records = [record_for_url(entry.url.split("#", 1)[0]) for entry in spec.packages]
    with tempfile.TemporaryDirectory(prefix="conda-standin-pkgs-") as cache:
        asyncio.run(rattler.install(records, target_prefix=prefix, cache_dir=cache, show_progress=False))


def run(arguments: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="conda run")
    parser.add_argument("--prefix", "-p", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    options = parser.parse_args(arguments)
    prefix = Path(options.prefix)

    if options.command[:2] == ["pip", "install"]:
        pip_install(prefix, options.command[2:])
        return 0
    environment = dict(os.environ, PATH=f"{prefix / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(options.command, env=environment, check=False).returncode


def site_packages(prefix: Path) -> Path:
    """Return lib/pythonX.Y/site-packages for the python package installed in `prefix`."""
    for record in (prefix / "conda-meta").glob("python-[0-9]*.json"):
        major, minor = json.loads(record.read_text())["version"].split(".")[:2]
        return prefix / "lib" / f"python{major}.{minor}" / "site-packages"
    raise FileNotFoundError(f"no python package is installed in {prefix}")


def pip_install(prefix: Path, arguments: list[str]) -> None:
    """Install the `name @ URL#sha256=HEX` wheels of `-r FILE`, as `pip install --no-deps` would."""
    parser = argparse.ArgumentParser(prog="pip install")
    parser.add_argument("--no-deps", action="store_true", required=True)
    parser.add_argument("-r", "--requirement", required=True)
    options = parser.parse_args(arguments)

    target = site_packages(prefix)
    for line in Path(options.requirement).read_text().splitlines():
        if not line.strip():
            continue
        name, url = (part.strip() for part in line.split(" @ ", 1))
        url, _, fragment = url.partition("#sha256=")
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != fragment:
            raise ValueError(f"sha256 of {url} is {digest}, expected {fragment}")
        extract_wheel(data, target)
        print(f"Installed {name} from {url}")


def extract_wheel(data: bytes, target: Path) -> None:
    """Unpack a pure-Python wheel into `target`, rejecting absolute and `..` paths."""
    with tempfile.TemporaryFile() as stream:
        stream.write(data)
        stream.seek(0)
        with zipfile.ZipFile(stream) as archive:
            for member in archive.namelist():
                path = PurePosixPath(member)
                if path.is_absolute() or ".." in path.parts:
                    raise ValueError(f"unsafe path {member!r} in wheel")
            archive.extractall(target)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
