"""Build, or reuse, the locked environment that a nox session runs in.

Each environment lives in `.nox/envs/<role>-<platform>` and carries a stamp
with the hash of the lock it was built from; it is rebuilt only when that lock
(or pyproject.toml) changes. Standard library only: the noxfile imports it.
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

from mlrepro import locking

ENVS_DIR = locking.ROOT / ".nox" / "envs"
TOOLS_DIR = locking.ROOT / ".nox" / "tools"
STAMP_NAME = ".mlrepro-env.json"

# The uv that builds environments when none is on PATH; a fixed version keeps
# lock output identical across machines.
UV_VERSION = "0.13.9"

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

    Raises locking.LockError when the host platform has no lock or its lock is stale.
    """
    platform_name = locking.host_platform()
    locking.check_lock(platform_name, role)

    prefix = env_dir(role, platform_name)
    stamp = expected_stamp(role, platform_name, "uv")
    if read_stamp(prefix) == stamp and env_python(prefix).exists():
        log(f"Reusing {prefix} (lock unchanged)")
        return env_python(prefix)

    build_uv_env(prefix, role, platform_name, log)
    (prefix / STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return env_python(prefix)


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
    subprocess.run(
        [uv, "pip", "install", "--python", python, "--no-deps", "--quiet", "--editable", str(locking.ROOT)],
        check=True, env=environment,
    )  # fmt: skip


if __name__ == "__main__":  # pragma: no cover - manual use: python -m mlrepro.provision test
    print(ensure_env(sys.argv[1] if len(sys.argv) > 1 else "runtime"))
