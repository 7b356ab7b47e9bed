"""Read environments/*.yml and write or check the hash-locked pip layer.

`environments/environment.yml` is the one hand-edited source of pins. uv turns
its `pip:` section into one hash-locked requirements file per platform:

    environments/requirements-<platform>.txt       runtime packages
    environments/requirements-test-<platform>.txt  runtime + test packages

The test lock is compiled with the runtime lock as a constraint, so the two
agree on every shared package and the test lock is a superset.

This module uses the standard library alone, because the noxfile imports it
before any environment exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS_DIR = ROOT / "environments"
RUNTIME_SPEC = ENVIRONMENTS_DIR / "environment.yml"
TEST_SPEC = ENVIRONMENTS_DIR / "test.yml"

# conda subdir -> uv's --python-platform. uv assumes macOS 13.0 for
# aarch64-apple-darwin, close to the macOS 13.4 tags of conda-lock 4.0.3.
UV_PLATFORMS = {
    "osx-arm64": "aarch64-apple-darwin",
    "linux-64": "x86_64-manylinux_2_28",
    "linux-aarch64": "aarch64-manylinux_2_28",
}
PLATFORMS = tuple(UV_PLATFORMS)

# The selectors conda-lock 4.0.3 accepts for each platform (src_parser/selectors.py).
SELECTORS = {
    "linux-64": {"linux64", "unix", "linux"},
    "linux-aarch64": {"aarch64", "unix", "linux"},
    "osx-arm64": {"arm64", "osx", "unix"},
}
_SELECTOR_LINE = re.compile(r"(.+?)\s*(#.*)\[([^\[\]]+)\](?(2)[^\(\)]*)$")
_DIGEST_LINE = re.compile(r"^# input-sha256: ([0-9a-f]{64})$", re.MULTILINE)

LOCK_COMMAND = "nox -s lock"
# The constraints file that compile_lock writes from conda-lock.yml's pip layer.
CONDA_LOCK_PINS = "conda-lock-pip-layer.txt"


class LockError(Exception):
    """A lock is missing, stale or cannot be made; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class EnvironmentSpec:
    """The parts of an environment.yml that the uv locks need."""

    python: str | None
    conda_packages: tuple[str, ...]
    pip_requirements: tuple[str, ...]


def filter_selectors(text: str, platform_name: str) -> list[str]:
    """Drop the lines whose `# [selector]` does not hold on platform_name.

    Mirrors conda-lock 4.0.3: a selector is one name, and full-line comments
    are dropped.
    """
    kept = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _SELECTOR_LINE.match(line)
        if match and match.group(3) not in SELECTORS[platform_name]:
            continue
        if match:
            line = match.group(1)
        kept.append(line)
    return kept


def read_spec(path: Path, platform_name: str) -> EnvironmentSpec:
    """Parse the `dependencies:` list of a conda environment file for one platform.

    Handles the layout conda-lock reads: conda specs as `- name=version` under
    `dependencies:`, pip specs under a nested `- pip:` list.
    """
    if platform_name not in SELECTORS:
        raise LockError(f"unknown platform {platform_name!r}: expected one of {', '.join(PLATFORMS)}")
    lines = filter_selectors(path.read_text(encoding="utf-8"), platform_name)

    conda_packages: list[str] = []
    pip_requirements: list[str] = []
    section = None
    pip_indent = None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            section = stripped.rstrip(":") if stripped.endswith(":") else None
            continue
        if section != "dependencies" or not stripped.startswith("- "):
            continue
        item = stripped[2:].split(" #")[0].strip()
        if item == "pip:":
            pip_indent = indent
            continue
        if pip_indent is not None and indent > pip_indent:
            pip_requirements.append(item)
        else:
            pip_indent = None
            conda_packages.append(item)

    python = next((spec.split("=", 1)[1] for spec in conda_packages if spec.startswith("python=")), None)
    return EnvironmentSpec(python, tuple(conda_packages), tuple(pip_requirements))


def lock_path(platform_name: str, role: str = "runtime") -> Path:
    """Return the lock file of one platform; role is "runtime" or "test"."""
    if role == "runtime":
        return ENVIRONMENTS_DIR / f"requirements-{platform_name}.txt"
    if role == "test":
        return ENVIRONMENTS_DIR / f"requirements-test-{platform_name}.txt"
    raise ValueError(f"unknown lock role {role!r}")


def lock_inputs(platform_name: str, role: str = "runtime") -> tuple[str, list[str]]:
    """Return the Python version and the pip requirements that a lock is made from."""
    runtime = read_spec(RUNTIME_SPEC, platform_name)
    if runtime.python is None:
        raise LockError(f"{RUNTIME_SPEC} pins no python=X.Y in dependencies")
    requirements = list(runtime.pip_requirements)
    if role == "test":
        requirements += read_spec(TEST_SPEC, platform_name).pip_requirements
    return runtime.python, requirements


def input_digest(platform_name: str, role: str = "runtime") -> str:
    """Hash what a lock depends on, so that an edit to environments/*.yml makes it stale."""
    python, requirements = lock_inputs(platform_name, role)
    payload = "\n".join([f"python={python}", f"platform={UV_PLATFORMS[platform_name]}", *requirements])
    return hashlib.sha256(payload.encode()).hexdigest()


def recorded_digest(path: Path) -> str | None:
    """Return the input hash written in a lock's header, or None."""
    if not path.exists():
        return None
    match = _DIGEST_LINE.search(path.read_text(encoding="utf-8"))
    return match.group(1) if match else None


def check_lock(platform_name: str, role: str = "runtime") -> None:
    """Raise LockError unless the lock exists and matches environments/*.yml."""
    path = lock_path(platform_name, role)
    recorded = recorded_digest(path)
    if recorded is None:
        raise LockError(f"{display_path(path)} is missing; run `{LOCK_COMMAND} -- --pip-only` to create it")
    if recorded != input_digest(platform_name, role):
        raise LockError(
            f"{display_path(path)} is stale against environments/*.yml; "
            f"run `{LOCK_COMMAND} -- --pip-only` to update it"
        )


def display_path(path: Path) -> str:
    """Show a path relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def compile_lock(
    uv: str, platform_name: str, role: str = "runtime", constraints: Sequence[str] = (), upgrade: bool = False
) -> Path:
    """Run `uv pip compile --generate-hashes` for one platform and role; return the lock path.

    `constraints` are extra `name==version` pins, such as the pip layer of
    conda-lock.yml, so that both locks pin the same versions.
    uv keeps the versions of the existing lock where the inputs still allow
    them, so relocking unchanged inputs changes nothing; upgrade=True takes the
    newest versions instead. The new lock is written beside the old one and moved into place only when
    uv succeeds, so a failed run leaves the old lock untouched.
    """
    python, requirements = lock_inputs(platform_name, role)
    path = lock_path(platform_name, role)
    with tempfile.TemporaryDirectory() as tmp:
        requirements_in = Path(tmp) / "requirements.in"
        requirements_in.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        compiled = Path(tmp) / "requirements.txt"
        if path.exists() and not upgrade:
            # uv prefers the pins of an existing output file.
            shutil.copyfile(path, compiled)
        command = [
            uv, "pip", "compile", str(requirements_in),
            "--python-version", python,
            "--python-platform", UV_PLATFORMS[platform_name],
            "--generate-hashes",
            "--custom-compile-command", LOCK_COMMAND,
            "--output-file", str(compiled),
            "--quiet",
        ]  # fmt: skip
        if role == "test":
            # A copy under its own name, so that uv's `# via -c` notes name no machine's path.
            runtime_lock = lock_path(platform_name, "runtime")
            shutil.copyfile(runtime_lock, Path(tmp) / runtime_lock.name)
            command += ["--constraint", runtime_lock.name]
        if constraints:
            # A relative path, so that uv's `# via -c` notes do not name the temporary folder.
            (Path(tmp) / CONDA_LOCK_PINS).write_text("\n".join(constraints) + "\n", encoding="utf-8")
            command += ["--constraint", CONDA_LOCK_PINS]
        subprocess.run(command, check=True, cwd=tmp, env=_uv_environment())
        header = (
            f"# mlrepro {role} lock for {platform_name} (python {python}), made by `{LOCK_COMMAND}`.\n"
            f"# input-sha256: {input_digest(platform_name, role)}\n"
        )
        staged = path.with_name(path.name + ".tmp")
        staged.write_text(header + compiled.read_text(encoding="utf-8"), encoding="utf-8")
        os.replace(staged, path)
    return path


def pinned_versions(path: Path) -> dict[str, str]:
    """Return {normalized name: version} for every `name==version` line of a lock."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if match:
            pins[normalize_name(match.group(1))] = match.group(2)
    return pins


def normalize_name(name: str) -> str:
    """Normalize a distribution name as PEP 503 does."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_rosetta() -> bool:
    """Return True when this process is an x86_64 program translated by Rosetta 2."""
    if sys.platform != "darwin":
        return False
    result = subprocess.run(
        ["sysctl", "-n", "sysctl.proc_translated"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() == "1"


def host_platform() -> str:
    """Return the conda subdir of this machine, or raise LockError naming the fix."""
    machine = platform.machine().lower()
    if sys.platform == "darwin":
        if machine == "arm64":
            return "osx-arm64"
        if is_rosetta():
            raise LockError(
                "this Python is x86_64 running under Rosetta 2 on an arm64 Mac, so it would "
                "install x86_64 wheels without Metal or MPS; install an arm64 Python "
                "(for example Miniforge's arm64 installer) and run nox from it"
            )
        raise LockError("Intel Macs (osx-64) are not in the lock; use an Apple Silicon Mac or Linux")
    if sys.platform.startswith("linux"):
        if machine in ("x86_64", "amd64"):
            return "linux-64"
        if machine in ("aarch64", "arm64"):
            return "linux-aarch64"
    raise LockError(
        f"platform {sys.platform}/{machine} is not in the lock; supported: {', '.join(PLATFORMS)}"
    )


def _uv_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # A lock must not depend on a machine's local wheel folders or index settings.
    for name in ("UV_FIND_LINKS", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_CONSTRAINT"):
        environment.pop(name, None)
    return environment
