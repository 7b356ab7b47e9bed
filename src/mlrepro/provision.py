"""Build, or reuse, the locked environment that a nox session runs in.

Each environment lives in `.nox/envs/<role>-<platform>` and carries a stamp
with the hash of the lock it was built from. It is rebuilt only when that lock
changes. A change to pyproject.toml alone reinstalls mlrepro and keeps the packages. Standard library only: the noxfile imports it.

Two backends build environments. `conda` creates them from conda-lock.yml with
`conda-lock install`; `uv` makes a venv from the host's uv lock. By default
(MLREPRO_ENV_BACKEND unset or `auto`) conda is used when a conda executable is
found and conda-lock.yml has a solution for this platform, else uv.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

from mlrepro import condalock, locking

ENVS_DIR = locking.ROOT / ".nox" / "envs"
TOOLS_DIR = locking.ROOT / ".nox" / "tools"
STAMP_NAME = ".mlrepro-env.json"

# The uv that builds environments when none is on PATH; a fixed version keeps
# lock output identical across machines.
UV_VERSION = "0.13.9"

# Set to `conda`, `uv` or `auto` (the default) to choose how environments are built.
BACKEND_VARIABLE = "MLREPRO_ENV_BACKEND"
WITHOUT_CONDA = f"Or set {BACKEND_VARIABLE}=uv to build from the uv lock instead"

Log = Callable[[str], None]


def find_uv(log: Log = print) -> str:
    """Return a uv executable: on PATH, next to this Python, or installed into .nox/tools."""
    found = shutil.which("uv")
    if found:
        return found

    tool_env = TOOLS_DIR / "uv"
    uv = tool_env / "bin" / "uv"
    if uv.exists():
        return str(uv)

    log(f"uv not found on PATH; installing uv=={UV_VERSION} into {tool_env}")
    venv.EnvBuilder(with_pip=True, clear=True).create(tool_env)
    subprocess.run(
        [str(tool_env / "bin" / "python"), "-m", "pip", "install", "--quiet", f"uv=={UV_VERSION}"],
        check=True,
    )
    return str(uv)


def env_dir(role: str, platform_name: str) -> Path:
    return ENVS_DIR / f"{role}-{platform_name}"


def env_python(prefix: Path) -> Path:
    return prefix / "bin" / "python"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected_stamp(role: str, platform_name: str, backend: str) -> dict[str, str]:
    """Return what an up-to-date environment's stamp must contain."""
    if backend == "conda":
        # conda-lock.yml was fresh against these files when the environment was
        # built, so an unchanged stamp means it still is.
        return {
            "backend": backend,
            "platform": platform_name,
            "lock_sha256": file_sha256(condalock.LOCKFILE),
            "sources_sha256": " ".join(file_sha256(source) for source in condalock.SOURCES),
            "pyproject_sha256": file_sha256(locking.ROOT / "pyproject.toml"),
        }
    return {
        "backend": backend,
        "platform": platform_name,
        "lock_sha256": file_sha256(locking.lock_path(platform_name, role)),
        "pyproject_sha256": file_sha256(locking.ROOT / "pyproject.toml"),
    }


def read_stamp(prefix: Path) -> dict[str, str] | None:
    try:
        return json.loads((prefix / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_env(role: str = "runtime", log: Log = print) -> Path:
    """Return the Python of an up-to-date `role` environment, building it if needed.

    Raises locking.LockError when the host platform has no lock or its lock is stale,
    and when this Python cannot install the host's packages (x86_64 under Rosetta 2).
    """
    platform_name = locking.host_platform()
    backend = choose_backend(platform_name, log)
    if backend == "uv":
        locking.check_lock(platform_name, role)

    prefix = env_dir(role, platform_name)
    stamp = expected_stamp(role, platform_name, backend)
    current = read_stamp(prefix)
    if current == stamp and env_python(prefix).exists():
        log(f"Reusing {prefix} (lock unchanged)")
        return env_python(prefix)
    if only_project_changed(current, stamp) and env_python(prefix).exists():
        log(f"Reusing {prefix} (lock unchanged); reinstalling mlrepro since pyproject.toml changed")
        install_project(find_uv(log), env_python(prefix))
        write_stamp(prefix, stamp)
        return env_python(prefix)

    if backend == "conda":
        build_conda_env(prefix, role, platform_name, log)
    else:
        build_uv_env(prefix, role, platform_name, log)
    write_stamp(prefix, stamp)
    return env_python(prefix)


def only_project_changed(current: dict[str, str] | None, expected: dict[str, str]) -> bool:
    """Return True when the stamps differ in pyproject.toml alone, so the packages can stay."""
    if current is None or current == expected:
        return False
    ignored = {"pyproject_sha256"}
    return {k: v for k, v in current.items() if k not in ignored} == {
        k: v for k, v in expected.items() if k not in ignored
    }


def write_stamp(prefix: Path, stamp: dict[str, str]) -> None:
    (prefix / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def choose_backend(platform_name: str, log: Log = print) -> str:
    """Return "conda" or "uv": the one $MLREPRO_ENV_BACKEND forces, else what this machine supports.

    A forced conda backend raises LockError when conda or the platform's
    solution in conda-lock.yml is missing; the automatic choice falls back to uv.
    """
    requested = (os.environ.get(BACKEND_VARIABLE) or "auto").strip().lower()
    if requested not in ("auto", "conda", "uv"):
        raise locking.LockError(
            f"{BACKEND_VARIABLE}={requested!r} is invalid; set it to conda, uv or auto (the default)"
        )
    if requested == "uv":
        return "uv"
    if requested == "conda":
        condalock.require_conda_executable(WITHOUT_CONDA)
        condalock.check_platform(condalock.read_lockfile(), platform_name)
        return "conda"

    lockfile_name = locking.display_path(condalock.LOCKFILE)
    if condalock.find_conda_executable() is None:
        log("No conda executable found; building from the uv lock")
        return "uv"
    if not condalock.LOCKFILE.exists():
        log(f"{lockfile_name} does not exist; building from the uv lock")
        return "uv"
    if platform_name not in condalock.read_lockfile().platforms:
        log(f"{lockfile_name} has no solution for {platform_name}; building from the uv lock")
        return "uv"
    return "conda"


def build_conda_env(prefix: Path, role: str, platform_name: str, log: Log) -> None:
    """Check conda-lock.yml against environments/*.yml, create the environment, and install mlrepro."""
    conda = condalock.require_conda_executable(WITHOUT_CONDA)
    uv = find_uv(log)
    python_command = condalock.ensure_tool_python(uv, platform_name, log)
    lock = condalock.read_lockfile()
    condalock.check_platform(lock, platform_name)
    condalock.check_fresh(lock, platform_name, condalock.content_hashes(python_command)[platform_name])

    log(f"Creating {prefix} from {locking.display_path(condalock.LOCKFILE)} with {conda}")
    if prefix.exists():
        shutil.rmtree(prefix)
    condalock.install(python_command, conda, prefix, role, platform_name)
    install_project(uv, env_python(prefix))


def install_project(uv: str, python: Path) -> None:
    """Install mlrepro itself, editable and without dependencies, into an environment."""
    command = [uv, "pip", "install", "--python", str(python), "--no-deps", "--quiet"]
    subprocess.run([*command, "--editable", str(locking.ROOT)], check=True)


def build_uv_env(prefix: Path, role: str, platform_name: str, log: Log) -> None:
    """Create a venv with uv, sync it to the lock with hashes checked, and install mlrepro."""
    uv = find_uv(log)
    lock = locking.lock_path(platform_name, role)
    python_version, _ = locking.lock_inputs(platform_name, role)
    environment = dict(os.environ, UV_PYTHON_DOWNLOADS="never")

    log(f"Creating {prefix} from {locking.display_path(lock)}")
    try:
        subprocess.run(
            [uv, "venv", "--quiet", "--clear", "--python", python_version, str(prefix)],
            check=True, env=environment,
        )  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise locking.LockError(
            f"uv could not create a Python {python_version} environment in {prefix}; "
            f"install Python {python_version} (it must be on PATH) and run the session again"
        ) from error

    python = str(env_python(prefix))
    subprocess.run(
        [uv, "pip", "sync", "--python", python, "--require-hashes", str(lock)],
        check=True, env=environment,
    )  # fmt: skip
    install_project(uv, env_python(prefix))


if __name__ == "__main__":  # pragma: no cover - manual use: python -m mlrepro.provision test
    print(ensure_env(sys.argv[1] if len(sys.argv) > 1 else "runtime"))
