"""Build mlrepro's CPU Docker image and run its smoke tests; the docker_* nox sessions call this.

    nox -s docker_base                      # Debian bookworm base image, for builders with no registry
    nox -s docker_build -- --base-image mlrepro-base:bookworm --ca-certs /usr/local/share/ca-certificates
    nox -s docker_smoke                     # verify-gpu, no lock drift, `pytest -m smoke`, in the images

docker_build tags two targets of docker/Dockerfile: mlrepro:cpu (runtime, no
pytest) and mlrepro:cpu-test. Options it does not know go to `docker build`.

This module uses the standard library alone, because the noxfile imports it
before any environment exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlrepro.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
CA_CERTS_STAGING_DIR = ROOT / "docker" / "ca-certificates"

IMAGE = "mlrepro:cpu"
TEST_IMAGE = "mlrepro:cpu-test"
TARGETS = {"runtime": IMAGE, "test": TEST_IMAGE}
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
LOCK_PLATFORMS = ("auto", "linux-64", "linux-aarch64")

SMOKE_PYTEST_ARGS = ("-m", "smoke")
NON_ROOT_CHECK = (
    'uid="$(id -u)"; [ "$uid" != 0 ] || { echo "mlrepro:cpu runs as root" >&2; exit 1; }; '
    'echo "mlrepro:cpu runs as uid $uid"'
)
# A script for the image's python. It exits 1, naming the packages, when
# `mlrepro env --json` finds no lock or any missing, different or extra package.
NO_DRIFT_CHECK = """\
import json, subprocess, sys
env = subprocess.run(["mlrepro", "env", "--json"], stdout=subprocess.PIPE, text=True, check=True)
facts = json.loads(env.stdout)
if facts["drift"] is None:
    sys.exit(f"mlrepro env found no lock: {facts['lock']['error']}")
drift = {kind: entries for kind, entries in facts["drift"].items() if entries}
if drift:
    sys.exit(f"mlrepro:cpu drifts from {facts['lock']['path']}: {json.dumps(drift)}")
print(f"mlrepro:cpu matches {facts['lock']['path']}: {len(facts['packages'])} packages, no drift")
"""


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """Options of `nox -s docker_build -- ...`; docker_args go to `docker build` unchanged."""

    base_image: str
    ca_certs: Path | None
    network: str | None
    lock_platform: str
    docker_args: tuple[str, ...]


class _ArgumentParser(argparse.ArgumentParser):
    """An argparse parser that raises UsageError instead of exiting, so nox reports the message."""

    def error(self, message: str):
        raise UsageError(f"docker_build: {message}")


def parse_build_options(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> BuildOptions:
    """Parse docker_build's options; the defaults come from MLREPRO_BASE_IMAGE and MLREPRO_CA_CERTS_DIR."""
    parser = _ArgumentParser(prog="nox -s docker_build --", add_help=False)
    parser.add_argument(
        "--base-image", default=environ.get("MLREPRO_BASE_IMAGE") or DEFAULT_BASE_IMAGE,
        help="image to build FROM: Debian-based, with python3.11 and venv "
        "(default: $MLREPRO_BASE_IMAGE or %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--ca-certs", type=Path, default=environ.get("MLREPRO_CA_CERTS_DIR") or None, metavar="DIR",
        help="folder whose *.crt files the build trusts, for a TLS-intercepting proxy "
        "(default: $MLREPRO_CA_CERTS_DIR)",
    )  # fmt: skip
    parser.add_argument(
        "--network", default=None,
        help="network of the build's RUN steps, passed to docker build (for example host); default: Docker's",
    )  # fmt: skip
    parser.add_argument(
        "--lock-platform", default="auto", choices=LOCK_PLATFORMS,
        help="lock to install; auto takes the one of the build's architecture (default: %(default)s)",
    )  # fmt: skip
    options, docker_args = parser.parse_known_args(list(argv))

    if options.ca_certs is not None and not options.ca_certs.is_dir():
        raise UsageError(
            f"--ca-certs {options.ca_certs} is not a folder; name the folder that contains the proxy's *.crt "
            "files (on Debian and Ubuntu, /usr/local/share/ca-certificates)"
        )
    return BuildOptions(
        base_image=options.base_image,
        ca_certs=options.ca_certs,
        network=options.network,
        lock_platform=options.lock_platform,
        docker_args=tuple(docker_args),
    )


def stage_ca_certificates(source: Path | None, staging_dir: Path = CA_CERTS_STAGING_DIR) -> list[Path]:
    """Replace the *.crt files in the build context's staging folder with those under source.

    Files in subfolders are flattened into one name (sub/proxy.crt -> sub-proxy.crt),
    because update-ca-certificates only needs the .crt suffix. Returns the staged files.
    """
    staging_dir.mkdir(parents=True, exist_ok=True)
    for old in staging_dir.glob("*.crt"):
        old.unlink()
    if source is None:
        return []

    certificates = sorted(path for path in source.rglob("*.crt") if path.is_file())
    if not certificates:
        raise UsageError(
            f"--ca-certs {source} contains no *.crt file; name the folder with the proxy's PEM certificates"
        )
    staged = []
    for certificate in certificates:
        destination = staging_dir / "-".join(certificate.relative_to(source).parts)
        shutil.copyfile(certificate, destination)
        staged.append(destination)
    return staged


def build_command(target: str, options: BuildOptions) -> list[str]:
    """Return the `docker build` command line of one Dockerfile target (runtime or test)."""
    command = [
        "docker", "build",
        "--file", str(DOCKERFILE.relative_to(ROOT)),
        "--target", target,
        "--tag", TARGETS[target],
        "--build-arg", f"BASE_IMAGE={options.base_image}",
        "--build-arg", f"LOCK_PLATFORM={options.lock_platform}",
    ]  # fmt: skip
    if options.network:
        command += ["--network", options.network]
    return [*command, *options.docker_args, "."]


def smoke_commands(pytest_args: Sequence[str] = ()) -> list[list[str]]:
    """Return the checks of docker_smoke: verify-gpu, a non-root user, no lock drift, then the smoke tests.

    Every container runs with --network none, so the images must work offline.
    """
    run = ["docker", "run", "--rm", "--network", "none"]
    return [
        [*run, IMAGE, "verify-gpu", "--no-record"],
        [*run, "--entrypoint", "sh", IMAGE, "-c", NON_ROOT_CHECK],
        [*run, "--entrypoint", "python", IMAGE, "-c", NO_DRIFT_CHECK],
        [*run, TEST_IMAGE, *SMOKE_PYTEST_ARGS, *pytest_args],
    ]
