"""conda-lock.yml: finding conda, reading the lock, staleness, backend choice and their errors.

Locks here are written by conda-lock's own writer (write_conda_lock_file) into
tmp_path; tests/test_condalock_integration.py runs the conda-lock CLI itself.
"""

import importlib.metadata
import json
import stat
import sys
import textwrap

import pytest
import yaml
from conda_lock.lockfile import write_conda_lock_file
from conda_lock.lockfile.v2prelim.models import HashModel, LockedDependency, Lockfile, LockMeta
from conda_lock.models.channel import Channel
from packaging.requirements import Requirement

from mlrepro import condalock, locking, provision

HOST = "linux-64"
NO_ROOT_LOCK = "no conda-lock.yml yet; `nox -s lock` makes it on a machine that reaches conda-forge"


def locked(name, version, manager="pip", platform_name=HOST, categories=("main",), dependencies=None):
    url = f"https://example.invalid/{platform_name}/{name}-{version}.whl"
    if manager == "conda":
        url = f"https://conda.anaconda.org/conda-forge/{platform_name}/{name}-{version}-0.conda"
    return LockedDependency(
        name=name,
        version=version,
        manager=manager,
        platform=platform_name,
        dependencies=dependencies or {},
        url=url,
        hash=HashModel(md5="0" * 32 if manager == "conda" else None, sha256="1" * 64),
        categories=set(categories),
    )


def write_lock(path, packages, platforms=(HOST,), content_hash=None):
    """Write a conda-lock.yml with conda-lock 4.0.3's writer."""
    lock = Lockfile(
        package=list(packages),
        metadata=LockMeta(
            content_hash=content_hash or {name: "f" * 64 for name in platforms},
            channels=[Channel.from_string("conda-forge")],
            platforms=list(platforms),
            sources=["environments/environment.yml", "environments/test.yml"],
        ),
    )
    write_conda_lock_file(lock, path, metadata_choices=set())
    return path


def fake_executable(folder, name):
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_conda(tmp_path, monkeypatch):
    """An environment with no CONDA_EXE and no conda on PATH."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.delenv("CONDA_EXE", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    return empty


# --- Finding conda ---------------------------------------------------------------


def test_find_conda_prefers_conda_exe(no_conda, tmp_path, monkeypatch):
    fake_executable(no_conda, "micromamba")
    conda_exe = fake_executable(tmp_path, "conda")
    monkeypatch.setenv("CONDA_EXE", str(conda_exe))

    assert condalock.find_conda_executable() == str(conda_exe)


def test_find_conda_search_order(no_conda):
    for name in ("conda", "mamba", "micromamba"):
        fake_executable(no_conda, name)

    assert condalock.find_conda_executable() == str(no_conda / "micromamba")
    (no_conda / "micromamba").unlink()
    assert condalock.find_conda_executable() == str(no_conda / "mamba")


def test_find_conda_none(no_conda):
    assert condalock.find_conda_executable() is None


def test_conda_exe_not_executable(no_conda, tmp_path, monkeypatch):
    monkeypatch.setenv("CONDA_EXE", str(tmp_path / "missing" / "conda"))

    with pytest.raises(locking.LockError, match="CONDA_EXE=") as error:
        condalock.find_conda_executable()
    assert "unset it" in str(error.value)


def test_missing_conda_names_the_fix(no_conda):
    with pytest.raises(locking.LockError, match="no conda executable found") as error:
        condalock.require_conda_executable("To update only the uv locks, run `nox -s lock -- --pip-only`")
    message = str(error.value)
    assert "micromamba" in message
    assert "Miniforge" in message
    assert "CONDA_EXE" in message
    assert message.endswith("run `nox -s lock -- --pip-only`")


# --- Reading conda-lock.yml ------------------------------------------------------


def test_read_lockfile_matches_pyyaml(tmp_path):
    packages = [
        locked("python", "3.11.9", manager="conda"),
        locked("pip", "24.0", manager="conda", dependencies={"python": ">=3.9"}),
        # Versions that YAML would read as numbers are written quoted.
        locked("packaging", "24.0", dependencies={"long-name-" * 8: ">=1.0, !=1.5.0, <3 ; os_name == 'posix'"}),
        locked("pytest", "8.3", categories=("test",)),
        locked("iniconfig", "2.0.0", categories=("test", "dev")),
        locked("torch", "2.11.0", platform_name="osx-arm64"),
    ]
    path = write_lock(tmp_path / "conda-lock.yml", packages, platforms=(HOST, "osx-arm64"))

    lock = condalock.read_lockfile(path)
    parsed = yaml.safe_load(path.read_text())

    assert lock.platforms == tuple(parsed["metadata"]["platforms"])
    assert lock.content_hash == parsed["metadata"]["content_hash"]
    assert [
        (package.name, package.version, package.manager, package.platform, package.category)
        for package in lock.packages
    ] == [
        (entry["name"], entry["version"], entry["manager"], entry["platform"], entry["category"])
        for entry in parsed["package"]
    ]
    assert len(lock.packages) == 7


def test_read_lockfile_missing(tmp_path):
    with pytest.raises(locking.LockError, match="missing") as error:
        condalock.read_lockfile(tmp_path / "conda-lock.yml")
    assert "nox -s lock" in str(error.value)
    assert "MLREPRO_ENV_BACKEND=uv" in str(error.value)


def test_read_lockfile_rejects_other_format(tmp_path):
    path = tmp_path / "conda-lock.yml"
    path.write_text("version: 2\nmetadata: {}\npackage: []\n")

    with pytest.raises(locking.LockError, match="format version '2'"):
        condalock.read_lockfile(path)


def test_pip_pins_by_category(tmp_path):
    packages = [
        locked("python", "3.11.9", manager="conda"),
        locked("Typing_Extensions", "4.12.2"),
        locked("pytest", "8.3.4", categories=("test",)),
        locked("torch", "2.11.0", platform_name="osx-arm64"),
    ]
    lock = condalock.read_lockfile(write_lock(tmp_path / "conda-lock.yml", packages, (HOST, "osx-arm64")))

    assert lock.pip_pins(HOST, ("main",)) == {"typing-extensions": "4.12.2"}
    assert lock.pip_pins(HOST) == {"typing-extensions": "4.12.2", "pytest": "8.3.4"}
    assert lock.pip_pins("osx-arm64") == {"torch": "2.11.0"}
    assert lock.conda_names(HOST) == {"python"}


def test_pip_constraints(tmp_path):
    packages = [locked("six", "1.17.0"), locked("pytest", "8.3.4", categories=("test",))]
    path = write_lock(tmp_path / "conda-lock.yml", packages)

    assert condalock.pip_constraints(HOST, path) == ["pytest==8.3.4", "six==1.17.0"]
    assert condalock.pip_constraints(HOST, tmp_path / "absent.yml") == []


# --- Agreement with the uv locks -------------------------------------------------


def test_pip_layer_mismatches(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "ENVIRONMENTS_DIR", tmp_path)
    uv_lock = "six==1.16.0 \\\n    --hash=sha256:00\npip==24.0\nidna==3.10\n"
    locking.lock_path(HOST, "runtime").write_text(uv_lock)
    packages = [
        locked("pip", "24.0", manager="conda"),
        locked("six", "1.17.0"),
        locked("numpy", "1.26.4"),
        locked("pytest", "8.3.4", categories=("test",)),
    ]
    lock = condalock.read_lockfile(write_lock(tmp_path / "conda-lock.yml", packages))

    assert condalock.pip_layer_mismatches(lock, HOST, "runtime") == [
        "idna==3.10 is in requirements-linux-64.txt but not in conda-lock.yml",
        "numpy==1.26.4 is in conda-lock.yml but not in requirements-linux-64.txt",
        "six: 1.17.0 in conda-lock.yml, 1.16.0 in requirements-linux-64.txt",
    ]


def test_pip_layer_agrees(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "ENVIRONMENTS_DIR", tmp_path)
    locking.lock_path(HOST, "runtime").write_text("six==1.17.0\n")
    locking.lock_path(HOST, "test").write_text("six==1.17.0\npytest==8.3.4\n")
    packages = [locked("six", "1.17.0"), locked("pytest", "8.3.4", categories=("test",))]
    lock = condalock.read_lockfile(write_lock(tmp_path / "conda-lock.yml", packages))

    assert condalock.pip_layer_mismatches(lock, HOST, "runtime") == []
    assert condalock.pip_layer_mismatches(lock, HOST, "test") == []


@pytest.mark.parametrize("platform_name", locking.PLATFORMS)
@pytest.mark.parametrize("role", ["runtime", "test"])
def test_root_lock_pip_layer_agrees(platform_name, role):
    if not condalock.LOCKFILE.exists():
        pytest.skip(NO_ROOT_LOCK)

    lock = condalock.read_lockfile()

    assert condalock.pip_layer_mismatches(lock, platform_name, role) == []


@pytest.mark.parametrize("platform_name", locking.PLATFORMS)
def test_root_lock_is_fresh(platform_name):
    if not condalock.LOCKFILE.exists():
        pytest.skip(NO_ROOT_LOCK)

    expected = condalock.compute_content_hashes(condalock.SOURCES, condalock.PYPI_TO_CONDA_LOOKUP)

    condalock.check_fresh(condalock.read_lockfile(), platform_name, expected[platform_name])


# --- Platform and staleness checks -----------------------------------------------


def test_check_platform_missing(tmp_path):
    packages = [locked("six", "1.17.0", platform_name="osx-arm64")]
    path = write_lock(tmp_path / "conda-lock.yml", packages, ("osx-arm64",))

    with pytest.raises(locking.LockError, match="no solution for this machine's platform linux-64") as error:
        condalock.check_platform(condalock.read_lockfile(path), HOST, path)
    message = str(error.value)
    assert "covers osx-arm64" in message
    assert "platforms:" in message
    assert "nox -s lock" in message
    assert "MLREPRO_ENV_BACKEND=uv" in message


def test_check_platform_listed_without_packages(tmp_path):
    packages = [locked("six", "1.17.0", platform_name="osx-arm64")]
    path = write_lock(tmp_path / "conda-lock.yml", packages, (HOST, "osx-arm64"))

    with pytest.raises(locking.LockError, match="no solution"):
        condalock.check_platform(condalock.read_lockfile(path), HOST, path)


def test_check_fresh_stale(tmp_path):
    path = write_lock(tmp_path / "conda-lock.yml", [locked("six", "1.17.0")], content_hash={HOST: "a" * 64})
    lock = condalock.read_lockfile(path)

    condalock.check_fresh(lock, HOST, "a" * 64, path)
    with pytest.raises(locking.LockError, match="stale") as error:
        condalock.check_fresh(lock, HOST, "b" * 64, path)
    assert "nox -s lock" in str(error.value)
    assert "b" * 64 in str(error.value)


def test_content_hash_tracks_environment_files(tmp_path):
    copies = []
    for source in condalock.SOURCES:
        copy = tmp_path / source.name
        copy.write_text(source.read_text())
        copies.append(copy)
    original = condalock.compute_content_hashes(condalock.SOURCES, condalock.PYPI_TO_CONDA_LOOKUP)

    copied = condalock.compute_content_hashes(copies, condalock.PYPI_TO_CONDA_LOOKUP)
    copies[0].write_text(copies[0].read_text().replace("torch==2.11.0", "torch==2.10.0"))
    edited = condalock.compute_content_hashes(copies, condalock.PYPI_TO_CONDA_LOOKUP)

    assert set(original) == set(locking.PLATFORMS)
    assert copied == original
    for platform_name in locking.PLATFORMS:
        assert edited[platform_name] != original[platform_name]


def test_content_hashes_in_subprocess():
    in_process = condalock.compute_content_hashes(condalock.SOURCES, condalock.PYPI_TO_CONDA_LOOKUP)

    assert condalock.content_hashes([sys.executable]) == in_process


# --- conda-lock runs and its tool environment ------------------------------------


def test_failed_lock_keeps_lockfile(tmp_path):
    (tmp_path / "environments").mkdir()
    source = tmp_path / "environments" / "environment.yml"
    source.write_text("channels: [conda-forge]\ndependencies: [python=3.11]\n")
    lockfile = tmp_path / "conda-lock.yml"
    lockfile.write_text("previous lock\n")
    fails = [sys.executable, "-c", "raise SystemExit(3)"]

    with pytest.raises(locking.LockError, match="exit code 3") as error:
        condalock.lock(fails, "conda", lambda line: None, sources=[source], lockfile=lockfile)
    assert "unchanged" in str(error.value)
    assert lockfile.read_text() == "previous lock\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["conda-lock.yml", "environments"]


def test_lock_closure_of_conda_lock():
    # This test runs on linux-64 with Python 3.11, the platform of the lock it reads.
    entries = condalock.lock_closure(locking.lock_path(HOST, "test"), "conda-lock")
    names = {locking.normalize_name(entry.split("==", 1)[0]) for entry in entries}
    requirements = [Requirement(text) for text in importlib.metadata.requires("conda-lock")]
    direct = {
        locking.normalize_name(requirement.name)
        for requirement in requirements
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""})
    }

    assert "conda-lock" in names
    assert direct <= names
    assert "torch" not in names
    assert "pytest" not in names
    assert all("--hash=sha256:" in entry for entry in entries)


def test_lock_closure_unknown_root():
    with pytest.raises(locking.LockError, match="does not pin no-such-package"):
        condalock.lock_closure(locking.lock_path(HOST, "test"), "no-such-package")


def test_compile_lock_passes_constraints(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "ENVIRONMENTS_DIR", tmp_path)
    record = tmp_path / "uv-call.json"
    fake_uv = tmp_path / "uv"
    fake_uv.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, pathlib, sys
            args = sys.argv[1:]
            pins = [pathlib.Path(args[i + 1]).read_text() for i, a in enumerate(args) if a == "--constraint"]
            pathlib.Path(args[args.index("--output-file") + 1]).write_text("six==1.17.0\\n")
            pathlib.Path({str(record)!r}).write_text(json.dumps({{"args": args, "constraints": pins}}))
            """
        )
    )
    fake_uv.chmod(0o755)

    path = locking.compile_lock(str(fake_uv), HOST, "runtime", ["six==1.17.0", "idna==3.10"])
    call = json.loads(record.read_text())

    assert path == tmp_path / "requirements-linux-64.txt"
    assert "--constraint" in call["args"]
    assert locking.CONDA_LOCK_PINS in call["args"]
    assert call["constraints"] == ["six==1.17.0\nidna==3.10\n"]


# --- Backend choice and env errors ----------------------------------------------


@pytest.fixture
def host_lock(tmp_path, monkeypatch):
    """conda-lock.yml in tmp_path with a solution for linux-64 only, as condalock.LOCKFILE."""
    path = write_lock(tmp_path / "conda-lock.yml", [locked("python", "3.11.9", manager="conda")])
    monkeypatch.setattr(condalock, "LOCKFILE", path)
    return path


@pytest.fixture
def with_conda(no_conda):
    return fake_executable(no_conda, "micromamba")


def choose(monkeypatch, value, platform_name=HOST):
    if value is None:
        monkeypatch.delenv(provision.BACKEND_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(provision.BACKEND_VARIABLE, value)
    logged = []
    return provision.choose_backend(platform_name, logged.append), logged


def test_backend_forced_uv(monkeypatch, with_conda, host_lock):
    assert choose(monkeypatch, "uv")[0] == "uv"


def test_backend_invalid_value(monkeypatch):
    with pytest.raises(locking.LockError, match="MLREPRO_ENV_BACKEND='pixi' is invalid") as error:
        choose(monkeypatch, "pixi")
    assert "conda, uv or auto" in str(error.value)


def test_backend_auto_picks_conda(monkeypatch, with_conda, host_lock):
    assert choose(monkeypatch, None) == ("conda", [])
    assert choose(monkeypatch, "auto")[0] == "conda"


def test_backend_auto_without_conda(monkeypatch, no_conda, host_lock):
    backend, logged = choose(monkeypatch, None)

    assert backend == "uv"
    assert logged == ["No conda executable found; building from the uv lock"]


def test_backend_auto_without_lockfile(monkeypatch, with_conda, tmp_path):
    monkeypatch.setattr(condalock, "LOCKFILE", tmp_path / "conda-lock.yml")

    backend, logged = choose(monkeypatch, None)

    assert backend == "uv"
    assert "does not exist" in logged[0]


def test_backend_auto_without_platform(monkeypatch, with_conda, host_lock):
    backend, logged = choose(monkeypatch, None, "osx-arm64")

    assert backend == "uv"
    assert "no solution for osx-arm64" in logged[0]


def test_backend_conda_without_platform(monkeypatch, with_conda, host_lock):
    with pytest.raises(locking.LockError, match="no solution for this machine's platform osx-arm64") as error:
        choose(monkeypatch, "conda", "osx-arm64")
    assert "platforms:" in str(error.value)


def test_backend_conda_without_executable(monkeypatch, no_conda, host_lock):
    with pytest.raises(locking.LockError, match="no conda executable found") as error:
        choose(monkeypatch, "conda")
    assert str(error.value).endswith("Or set MLREPRO_ENV_BACKEND=uv to build from the uv lock instead")


def test_backend_conda_without_lockfile(monkeypatch, with_conda, tmp_path):
    monkeypatch.setattr(condalock, "LOCKFILE", tmp_path / "conda-lock.yml")

    with pytest.raises(locking.LockError, match="conda-lock.yml is missing"):
        choose(monkeypatch, "conda")


def test_ensure_env_conda_rejects_rosetta(monkeypatch):
    monkeypatch.setenv(provision.BACKEND_VARIABLE, "conda")
    monkeypatch.setattr(locking.sys, "platform", "darwin")
    monkeypatch.setattr(locking.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(locking, "is_rosetta", lambda: True)
    monkeypatch.setattr(condalock, "find_conda_executable", lambda: pytest.fail("searched conda first"))

    with pytest.raises(locking.LockError, match="Rosetta 2") as error:
        provision.ensure_env("runtime", lambda line: None)
    assert "arm64 Python" in str(error.value)


def test_ensure_env_conda_stale_lock(monkeypatch, tmp_path, with_conda, host_lock):
    monkeypatch.setenv(provision.BACKEND_VARIABLE, "conda")
    monkeypatch.setattr(locking, "host_platform", lambda: HOST)
    monkeypatch.setattr(provision, "ENVS_DIR", tmp_path / "envs")
    monkeypatch.setattr(provision, "find_uv", lambda log: "uv")
    monkeypatch.setattr(condalock, "ensure_tool_python", lambda uv, platform_name, log: [sys.executable])
    monkeypatch.setattr(condalock, "install", lambda *args: pytest.fail("installed from a stale lock"))

    with pytest.raises(locking.LockError, match="stale against environments/environment.yml") as error:
        provision.ensure_env("test", lambda line: None)
    assert "nox -s lock" in str(error.value)
    assert not (tmp_path / "envs").exists()


def test_conda_stamp_follows_sources(tmp_path, monkeypatch, host_lock):
    source = tmp_path / "environment.yml"
    source.write_text("dependencies: [python=3.11]\n")
    monkeypatch.setattr(condalock, "SOURCES", (source,))
    before = provision.expected_stamp("test", HOST, "conda")

    source.write_text("dependencies: [python=3.12]\n")
    after = provision.expected_stamp("test", HOST, "conda")

    assert before["backend"] == "conda"
    assert before["lock_sha256"] == after["lock_sha256"]
    assert before["sources_sha256"] != after["sources_sha256"]


def test_lookup_file_format():
    # conda-lock 4.0.3 (lookup.py) reads each entry's conda_name and pypi_name.
    lookup = json.loads(condalock.PYPI_TO_CONDA_LOOKUP.read_text())

    assert lookup["pip"]["conda_name"] == "pip"
    assert all({"conda_name", "pypi_name"} <= set(entry) for entry in lookup.values())
    assert condalock.pypi_names_of_conda_packages({"pip", "python"}) == {"pip", "python"}


def test_conda_lock_rejects_manylinux_2_27():
    # Why conda-lock 4.0.3 cannot lock torch 2.11.0 on Linux: torch requires
    # nvidia-cudnn-cu13==9.19.0.56, whose Linux wheels are manylinux_2_27 only.
    # When this fails, conda-lock accepts them and the NOTE in condalock.lock can go.
    from conda_lock.pypi_solver import PlatformEnv
    from conda_lock.virtual_package import default_virtual_package_repodata
    from packaging.utils import parse_wheel_filename

    virtual_packages = default_virtual_package_repodata().all_repodata[HOST]["packages"]
    env = PlatformEnv(platform=HOST, platform_virtual_packages=virtual_packages, python_version="3.11.9")
    supported = set(env.get_supported_tags())
    cudnn = parse_wheel_filename("nvidia_cudnn_cu13-9.19.0.56-py3-none-manylinux_2_27_x86_64.whl")[3]
    numpy = parse_wheel_filename("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")[3]

    assert not cudnn & supported
    assert numpy & supported
