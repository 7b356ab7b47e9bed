"""Lock environments/*.yml with conda-lock, and read and check conda-lock.yml.

`conda-lock.yml` at the repository root is the lock that conda users install
from, above all native arm64 Macs, where conda provides the arm64 Python that
Metal and MPS need. It contains one solution per platform for both environment
files: environment.yml in conda-lock's `main` category, test.yml in `test`.

conda-lock needs a conda executable to solve the conda layer. We pass the one
we find with `--conda`, so conda-lock never downloads one, and we pass the
local name mapping in environments/ with `--pypi_to_conda_lookup_file`, so it
never fetches the mapping from GitHub. conda-lock 4.0.3 itself runs in a tool
environment (.nox/tools/conda-lock) that uv installs from the hash-pinned
closure of conda-lock in the host's test lock.

conda-lock.yml is YAML and this module must not import PyYAML, because the
noxfile imports it before any environment exists. `read_lockfile` parses the
fixed block layout that conda-lock 4.0.3 writes (lock format version 1), and
the integration test checks it against PyYAML on a real conda-lock output.
Only the content hash needs conda-lock's own code: `content_hashes` runs
`python -m mlrepro.condalock content-hash` in the tool environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from mlrepro import locking
from mlrepro.locking import LockError

LOCKFILE = locking.ROOT / "conda-lock.yml"
SOURCES = (locking.RUNTIME_SPEC, locking.TEST_SPEC)

# Maps PyPI names to conda-forge names in the format of conda-lock's default
# mapping (grayskull_pypi_mapping.json). conda-lock assumes the same name for a
# package that the file does not list.
PYPI_TO_CONDA_LOOKUP = locking.ENVIRONMENTS_DIR / "pypi-to-conda-lookup.json"

CONDA_LOCK_VERSION = "4.0.3"
TOOL_ENV = locking.ROOT / ".nox" / "tools" / "conda-lock"
SRC_DIR = locking.ROOT / "src"

# Searched on PATH in this order, after $CONDA_EXE.
CONDA_EXECUTABLES = ("micromamba", "mamba", "conda")
CONDA_INSTALL_HINT = (
    "install micromamba (https://mamba.readthedocs.io/en/latest/installation/micromamba-installation.html) "
    "or Miniforge (https://conda-forge.org/download/) and put it on PATH, or set CONDA_EXE to its path"
)
# The lock format version that conda-lock 4.0.3 writes, and the only one read_lockfile parses.
LOCKFILE_VERSION = "1"

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class LockedPackage:
    """One package entry of conda-lock.yml; conda-lock repeats an entry once per category."""

    name: str
    version: str
    manager: str
    platform: str
    category: str


@dataclasses.dataclass(frozen=True)
class CondaLockFile:
    """The parts of conda-lock.yml that mlrepro reads."""

    platforms: tuple[str, ...]
    content_hash: dict[str, str]
    packages: tuple[LockedPackage, ...]

    def pip_pins(self, platform_name: str, categories: Sequence[str] = ("main", "test")) -> dict[str, str]:
        """Return {normalized name: version} of the pip layer of one platform."""
        return {
            locking.normalize_name(package.name): package.version
            for package in self.packages
            if package.manager == "pip"
            and package.platform == platform_name
            and package.category in categories
        }

    def conda_names(self, platform_name: str) -> set[str]:
        return {
            package.name
            for package in self.packages
            if package.manager == "conda" and package.platform == platform_name
        }


def find_conda_executable() -> str | None:
    """Return $CONDA_EXE, else the first of micromamba, mamba, conda on PATH, else None."""
    conda_exe = os.environ.get("CONDA_EXE")
    if conda_exe:
        if not (os.path.isfile(conda_exe) and os.access(conda_exe, os.X_OK)):
            raise LockError(
                f"CONDA_EXE={conda_exe} is not an executable file; "
                "point it at conda, mamba or micromamba, or unset it"
            )
        return conda_exe
    for name in CONDA_EXECUTABLES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_conda_executable(alternative: str) -> str:
    """Return a conda executable, or raise LockError saying how to get one.

    `alternative` ends the message with what to do without conda.
    """
    conda = find_conda_executable()
    if conda is None:
        raise LockError(
            "no conda executable found: CONDA_EXE is unset and none of "
            f"{', '.join(CONDA_EXECUTABLES)} is on PATH; {CONDA_INSTALL_HINT}. {alternative}"
        )
    return conda


# --- Reading conda-lock.yml ---------------------------------------------------


def _scalar(text: str) -> str:
    """Decode a YAML scalar as PyYAML writes it: plain, 'single' or "double" quoted."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return json.loads(text)
    return text


def read_lockfile(path: Path | None = None) -> CondaLockFile:
    """Parse the platforms, content hashes and package entries of a conda-lock.yml.

    Reads the block layout that conda-lock 4.0.3 writes with PyYAML: top-level
    keys at column 0, `metadata` keys at 2 spaces, each package a `- name:` item
    with its keys at 2 spaces. Keys nested deeper (dependencies, hash, url) are
    skipped. Raises LockError when the file is missing or in another format.
    """
    path = path or LOCKFILE
    if not path.exists():
        raise LockError(
            f"{locking.display_path(path)} is missing; run `{locking.LOCK_COMMAND}` on a machine "
            "with conda that reaches conda-forge, or set MLREPRO_ENV_BACKEND=uv to use the uv locks"
        )

    version = None
    platforms: list[str] = []
    content_hash: dict[str, str] = {}
    entries: list[dict[str, str]] = []
    section = metadata_key = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0 and not line.startswith("- "):
            key, _, value = line.partition(":")
            section = key
            if key == "version":
                version = _scalar(value)
            continue

        if section == "metadata":
            if indent == 2 and not line.lstrip().startswith("- "):
                metadata_key = line.strip().partition(":")[0]
            elif metadata_key == "platforms" and line.lstrip().startswith("- "):
                platforms.append(_scalar(line.lstrip()[2:]))
            elif metadata_key == "content_hash" and indent == 4:
                key, _, value = line.strip().partition(":")
                content_hash[key] = _scalar(value)
        elif section == "package":
            if line.startswith("- "):
                entries.append({})
                line = "  " + line[2:]
                indent = 2
            if indent == 2 and entries:
                key, _, value = line.strip().partition(":")
                if value.strip():
                    entries[-1][key] = _scalar(value)

    if version != LOCKFILE_VERSION:
        raise LockError(
            f"{locking.display_path(path)} has lock format version {version!r}; mlrepro reads "
            f"version {LOCKFILE_VERSION}, written by conda-lock {CONDA_LOCK_VERSION}. "
            f"Run `{locking.LOCK_COMMAND}` to rewrite it"
        )
    packages = tuple(
        LockedPackage(entry["name"], entry["version"], entry["manager"], entry["platform"], entry["category"])
        for entry in entries
    )
    return CondaLockFile(tuple(platforms), content_hash, packages)


def pip_constraints(platform_name: str, path: Path | None = None) -> list[str]:
    """Return `name==version` for the pip layer of conda-lock.yml on one platform, or [] without the file.

    Compiling the uv locks with these as constraints makes them pin what conda-lock pinned.
    """
    path = path or LOCKFILE
    if not path.exists():
        return []
    pins = read_lockfile(path).pip_pins(platform_name)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def pypi_names_of_conda_packages(conda_names: set[str], lookup_file: Path | None = None) -> set[str]:
    """Map conda package names to PyPI names with the lookup file; an unlisted name maps to itself."""
    lookup = json.loads((lookup_file or PYPI_TO_CONDA_LOOKUP).read_text(encoding="utf-8"))
    pypi_by_conda = {entry["conda_name"]: entry["pypi_name"] for entry in lookup.values()}
    return {locking.normalize_name(pypi_by_conda.get(name, name)) for name in conda_names}


def pip_layer_mismatches(lock: CondaLockFile, platform_name: str, role: str) -> list[str]:
    """Compare the pip layer of conda-lock.yml with the uv lock of one platform and role.

    Returns one line per difference. A package that the uv lock pins and the
    conda layer provides (pip itself, for example) is not a difference.
    """
    categories = ("main",) if role == "runtime" else ("main", "test")
    conda_pins = lock.pip_pins(platform_name, categories)
    uv_lock = locking.lock_path(platform_name, role)
    uv_pins = locking.pinned_versions(uv_lock)
    from_conda = pypi_names_of_conda_packages(lock.conda_names(platform_name))

    mismatches = []
    for name in sorted(conda_pins.keys() | uv_pins.keys()):
        conda_version, uv_version = conda_pins.get(name), uv_pins.get(name)
        if conda_version and uv_version and conda_version != uv_version:
            mismatches.append(f"{name}: {conda_version} in conda-lock.yml, {uv_version} in {uv_lock.name}")
        elif conda_version and not uv_version:
            mismatches.append(f"{name}=={conda_version} is in conda-lock.yml but not in {uv_lock.name}")
        elif uv_version and not conda_version and name not in from_conda:
            mismatches.append(f"{name}=={uv_version} is in {uv_lock.name} but not in conda-lock.yml")
    return mismatches


# --- Checking conda-lock.yml ----------------------------------------------------


def check_platform(lock: CondaLockFile, platform_name: str, path: Path | None = None) -> None:
    """Raise LockError unless the lock has a solution for platform_name.

    micromamba only warns about a missing platform and creates an empty
    environment, so this check must come before any install.
    """
    has_packages = any(package.platform == platform_name for package in lock.packages)
    if platform_name in lock.platforms and has_packages:
        return
    name = locking.display_path(path or LOCKFILE)
    raise LockError(
        f"{name} has no solution for this machine's platform {platform_name} "
        f"(it covers {', '.join(lock.platforms) or 'no platform'}); add {platform_name} to `platforms:` "
        f"in environments/environment.yml and environments/test.yml and run `{locking.LOCK_COMMAND}`, "
        "or set MLREPRO_ENV_BACKEND=uv to use the uv locks"
    )


def check_fresh(
    lock: CondaLockFile, platform_name: str, expected_hash: str, path: Path | None = None
) -> None:
    """Raise LockError when the lock's content hash for platform_name is not expected_hash."""
    recorded = lock.content_hash.get(platform_name)
    if recorded == expected_hash:
        return
    name = locking.display_path(path or LOCKFILE)
    raise LockError(
        f"{name} is stale against environments/environment.yml and environments/test.yml on "
        f"{platform_name}: its content hash is {recorded}, the files hash to {expected_hash}. "
        f"Run `{locking.LOCK_COMMAND}` on a machine with conda that reaches conda-forge, "
        "or set MLREPRO_ENV_BACKEND=uv to use the uv locks"
    )


def compute_content_hashes(sources: Sequence[Path], lookup_file: Path) -> dict[str, str]:
    """Return conda-lock's content hash per platform for a set of environment files.

    Uses conda-lock's own code, so call it in a Python that has conda-lock
    installed. It mirrors `conda-lock lock` as `lock` runs it: platforms from the
    files, no channel overrides, and the default virtual packages (no
    virtual-packages.yml in the working directory, no --with-cuda).
    """
    from conda_lock.content_hash import compute_content_hashes as conda_lock_hashes
    from conda_lock.src_parser import make_lock_spec
    from conda_lock.virtual_package import default_virtual_package_repodata

    spec = make_lock_spec(src_files=[Path(source) for source in sources], mapping_url=str(lookup_file))
    return conda_lock_hashes(spec, default_virtual_package_repodata())


def content_hashes(
    python_command: Sequence[str], sources: Sequence[Path] | None = None, lookup_file: Path | None = None
) -> dict[str, str]:
    """Run compute_content_hashes in the Python that python_command starts (one with conda-lock)."""
    command = [
        *python_command, "-m", "mlrepro.condalock", "content-hash",
        "--lookup-file", str(lookup_file or PYPI_TO_CONDA_LOOKUP), *map(str, sources or SOURCES),
    ]  # fmt: skip
    environment = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    if result.returncode != 0:
        raise LockError(f"computing conda-lock's content hash failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout)


# --- Running conda-lock ---------------------------------------------------------


def lock(
    python_command: Sequence[str],
    conda: str,
    log: Log = print,
    *,
    sources: Sequence[Path] | None = None,
    lockfile: Path | None = None,
    lookup_file: Path | None = None,
    platforms: Sequence[str] = locking.PLATFORMS,
) -> Path:
    """Solve `sources` with conda-lock and write `lockfile`, replacing it only when all went well.

    conda-lock writes into a temporary folder that contains copies of the sources
    at the same paths relative to the lock, so the lock records them as
    `environments/environment.yml`, not as paths into the temporary folder.
    """
    # NOTE: conda-lock 4.0.3 accepts only the manylinux tags 1, 2010, 2014, _2_17,
    # _2_18, _2_24 and _2_28 (MANYLINUX_TAGS in conda_lock/pypi_solver.py). It
    # rejects wheels tagged only manylinux_2_25 or _2_27, such as the nvidia-*
    # CUDA wheels that torch 2.11.0 requires on Linux, so the linux-64 and
    # linux-aarch64 solves fail with "Unable to find installation candidates".
    sources = sources or SOURCES
    lockfile = lockfile or LOCKFILE
    lookup_file = lookup_file or PYPI_TO_CONDA_LOOKUP
    with tempfile.TemporaryDirectory(prefix="mlrepro-conda-lock-") as tmp:
        staging = Path(tmp)
        relative_sources = [Path(source).relative_to(lockfile.parent) for source in sources]
        for source, relative in zip(sources, relative_sources):
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / relative)

        command = [
            *python_command, "-m", "conda_lock", "lock",
            "--conda", conda,
            "--pypi_to_conda_lookup_file", str(lookup_file),
            *(argument for relative in relative_sources for argument in ("--file", str(relative))),
            "--lockfile", lockfile.name,
        ]  # fmt: skip
        log(f"Running {shlex.join(command)}")
        result = subprocess.run(command, cwd=staging, check=False)
        if result.returncode != 0:
            raise LockError(
                f"conda-lock failed with exit code {result.returncode} (see its output above for the cause); "
                f"{locking.display_path(lockfile)} is unchanged"
            )

        solved = staging / lockfile.name
        missing = sorted(set(platforms) - set(read_lockfile(solved).platforms))
        if missing:
            raise LockError(
                f"conda-lock solved no environment for {', '.join(missing)}; check `platforms:` in "
                f"{', '.join(map(str, relative_sources))}. {locking.display_path(lockfile)} is unchanged"
            )
        staged = lockfile.with_name(lockfile.name + ".tmp")
        shutil.copyfile(solved, staged)
        os.replace(staged, lockfile)
    log(f"Wrote {locking.display_path(lockfile)}")
    return lockfile


def install(
    python_command: Sequence[str],
    conda: str,
    prefix: Path,
    role: str,
    platform_name: str,
    lockfile: Path | None = None,
) -> None:
    """Create the environment `prefix` from conda-lock.yml; the `test` role adds the test category."""
    command = [
        *python_command, "-m", "conda_lock", "install",
        "--conda", conda,
        "--prefix", str(prefix),
        "--force-platform", platform_name,
        *(["--extras", "test"] if role == "test" else []),
        str(lockfile or LOCKFILE),
    ]  # fmt: skip
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise LockError(
            f"conda-lock install failed with exit code {result.returncode} (see its output above for the cause); "
            f"{prefix} is incomplete and the next run rebuilds it"
        )


# --- The conda-lock tool environment --------------------------------------------


def lock_closure(lock: Path, root: str) -> list[str]:
    """Return the hash-pinned entries of a uv lock that `root` needs, itself included.

    Walks the `# via` comments that uv writes under each entry, from the
    dependents back to `root`, and returns each entry's text
    (`name==version \\` and its `--hash` lines).
    """
    entries: dict[str, list[str]] = {}
    dependents: dict[str, set[str]] = {}
    name = None
    in_via = False
    for line in lock.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if line and not line[0].isspace() and not line.startswith("#"):
            name = locking.normalize_name(line.split("==", 1)[0])
            entries[name] = [line]
            dependents[name] = set()
            in_via = False
        elif name and stripped.startswith("--hash="):
            entries[name].append(line)
        elif name and stripped.startswith("# via"):
            via = stripped.removeprefix("# via").strip()
            in_via = not via
            if via:
                dependents[name].add(via)
        elif name and in_via and stripped.startswith("#   "):
            dependents[name].add(stripped.removeprefix("#").strip())

    needs: dict[str, set[str]] = {}
    for dependency, parents in dependents.items():
        for parent in parents:
            needs.setdefault(locking.normalize_name(parent), set()).add(dependency)

    root = locking.normalize_name(root)
    if root not in entries:
        raise LockError(f"{locking.display_path(lock)} does not pin {root}")
    closure, todo = set(), [root]
    while todo:
        current = todo.pop()
        if current not in closure:
            closure.add(current)
            todo.extend(needs.get(current, ()))
    return ["\n".join(entries[name]) for name in sorted(closure)]


def ensure_tool_python(uv: str, platform_name: str, log: Log = print) -> list[str]:
    """Return the command of a Python that has conda-lock, building .nox/tools/conda-lock if needed.

    uv installs conda-lock and its dependencies at the versions and hashes of
    the host's test lock, so the tool matches what the test suite runs.
    """
    test_lock = locking.lock_path(platform_name, "test")
    requirements = "\n".join(lock_closure(test_lock, "conda-lock")) + "\n"
    python = TOOL_ENV / "bin" / "python"
    stamp = TOOL_ENV / "requirements.txt"
    if python.exists() and stamp.exists() and stamp.read_text(encoding="utf-8") == requirements:
        return [str(python)]

    python_version, _ = locking.lock_inputs(platform_name, "test")
    log(f"Installing conda-lock {CONDA_LOCK_VERSION} into {TOOL_ENV}")
    subprocess.run([uv, "venv", "--quiet", "--clear", "--python", python_version, str(TOOL_ENV)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text(requirements, encoding="utf-8")
        command = [uv, "pip", "sync", "--quiet", "--python", str(python), "--require-hashes", str(pinned)]
        subprocess.run(command, check=True)
    stamp.write_text(requirements, encoding="utf-8")
    return [str(python)]


def main(argv: Sequence[str] | None = None) -> int:
    """Print conda-lock's content hashes as JSON: `python -m mlrepro.condalock content-hash FILE...`."""
    parser = argparse.ArgumentParser(prog="python -m mlrepro.condalock")
    commands = parser.add_subparsers(dest="command", required=True)
    content_hash = commands.add_parser("content-hash", help="print conda-lock's content hash per platform")
    content_hash.add_argument("--lookup-file", type=Path, default=PYPI_TO_CONDA_LOOKUP)
    content_hash.add_argument("sources", nargs="+", type=Path)
    args = parser.parse_args(argv)

    print(json.dumps(compute_content_hashes(args.sources, args.lookup_file), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
