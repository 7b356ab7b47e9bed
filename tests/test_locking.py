"""The uv locks: selectors, freshness against environments/*.yml, and host platform detection."""

import shutil
import subprocess

import pytest

from mlrepro import locking, provision


@pytest.mark.parametrize("platform_name", locking.PLATFORMS)
@pytest.mark.parametrize("role", ["runtime", "test"])
def test_committed_lock_is_fresh(platform_name, role):
    # Fails when environments/*.yml changed without `nox -s lock -- --pip-only`.
    locking.check_lock(platform_name, role)


def test_selectors_pick_tensorflow_per_platform():
    requirements = {name: locking.lock_inputs(name)[1] for name in locking.PLATFORMS}

    assert "tensorflow-macos==2.16.2" in requirements["osx-arm64"]
    assert "tensorflow-metal==1.2.0" in requirements["osx-arm64"]
    assert "tensorflow-cpu==2.16.2" in requirements["linux-64"]
    assert "tensorflow==2.16.2" in requirements["linux-aarch64"]
    assert not any(r.startswith("tensorflow-metal") for r in requirements["linux-64"])
    assert not any(r.startswith("tensorflow-cpu") for r in requirements["osx-arm64"])


def test_filter_selectors_matches_conda_lock_rules():
    text = "a\n  - x  # [osx]\n  - y  # [linux64]\n  # - commented\n  - z  # [unix]\n"

    assert locking.filter_selectors(text, "osx-arm64") == ["a", "  - x", "  - z"]
    assert locking.filter_selectors(text, "linux-64") == ["a", "  - y", "  - z"]
    assert locking.filter_selectors(text, "linux-aarch64") == ["a", "  - z"]


def test_read_spec_splits_conda_and_pip():
    spec = locking.read_spec(locking.RUNTIME_SPEC, "linux-64")

    assert spec.python == "3.11"
    assert spec.conda_packages == ("python=3.11", "pip")
    assert "torch==2.11.0" in spec.pip_requirements


@pytest.mark.parametrize("platform_name", locking.PLATFORMS)
def test_locks_pin_the_verified_stack(platform_name):
    pins = locking.pinned_versions(locking.lock_path(platform_name))

    assert pins["torch"] == "2.11.0"
    assert pins["torchvision"] == "0.26.0"
    assert pins["numpy"].startswith("1.")
    assert int(pins["pyarrow"].split(".")[0]) < 26
    assert pins["transformers"].startswith("5.")


@pytest.mark.parametrize("platform_name", locking.PLATFORMS)
def test_test_lock_keeps_runtime_versions(platform_name):
    runtime = locking.pinned_versions(locking.lock_path(platform_name, "runtime"))
    test = locking.pinned_versions(locking.lock_path(platform_name, "test"))

    assert {name: test.get(name) for name in runtime} == runtime
    assert "pytest" in test
    assert "pytest" not in runtime


def test_edited_environment_makes_lock_stale(tmp_path, monkeypatch):
    edited = tmp_path / "environment.yml"
    edited.write_text(locking.RUNTIME_SPEC.read_text().replace("torch==2.11.0", "torch==2.10.0"))
    monkeypatch.setattr(locking, "RUNTIME_SPEC", edited)

    with pytest.raises(locking.LockError, match="stale") as error:
        locking.check_lock("linux-64")
    assert "nox -s lock" in str(error.value)


def test_missing_lock_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "ENVIRONMENTS_DIR", tmp_path)

    with pytest.raises(locking.LockError, match="missing") as error:
        locking.check_lock("linux-64")
    assert "nox -s lock -- --pip-only" in str(error.value)


@pytest.mark.parametrize(
    ("sys_platform", "machine", "expected"),
    [("linux", "x86_64", "linux-64"), ("linux", "aarch64", "linux-aarch64"), ("darwin", "arm64", "osx-arm64")],
)
def test_host_platform(monkeypatch, sys_platform, machine, expected):
    monkeypatch.setattr(locking.sys, "platform", sys_platform)
    monkeypatch.setattr(locking.platform, "machine", lambda: machine)

    assert locking.host_platform() == expected


def test_host_platform_rejects_rosetta(monkeypatch):
    monkeypatch.setattr(locking.sys, "platform", "darwin")
    monkeypatch.setattr(locking.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(locking, "is_rosetta", lambda: True)

    with pytest.raises(locking.LockError, match="Rosetta 2") as error:
        locking.host_platform()
    assert "arm64 Python" in str(error.value)


def test_host_platform_rejects_windows(monkeypatch):
    monkeypatch.setattr(locking.sys, "platform", "win32")
    monkeypatch.setattr(locking.platform, "machine", lambda: "AMD64")

    with pytest.raises(locking.LockError, match="not in the lock"):
        locking.host_platform()


def test_env_stamp_follows_lock_content(tmp_path, monkeypatch):
    monkeypatch.setattr(locking, "ENVIRONMENTS_DIR", tmp_path)
    lock = locking.lock_path("linux-64")
    lock.write_text("six==1.17.0\n")
    before = provision.expected_stamp("runtime", "linux-64", "uv")

    lock.write_text("six==1.16.0\n")
    after = provision.expected_stamp("runtime", "linux-64", "uv")

    assert before["lock_sha256"] != after["lock_sha256"]
    assert before["pyproject_sha256"] == after["pyproject_sha256"]


@pytest.fixture
def tiny_environments(tmp_path, monkeypatch):
    """A copy of environments/ whose pip layer is one small package."""
    (tmp_path / "environment.yml").write_text(
        "name: t\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - six==1.17.0\n"
    )
    (tmp_path / "test.yml").write_text("name: t\ncategory: test\ndependencies:\n  - pip:\n      - iniconfig==2.0.0\n")
    monkeypatch.setattr(locking, "ENVIRONMENTS_DIR", tmp_path)
    monkeypatch.setattr(locking, "RUNTIME_SPEC", tmp_path / "environment.yml")
    monkeypatch.setattr(locking, "TEST_SPEC", tmp_path / "test.yml")
    return tmp_path


@pytest.mark.network
def test_compile_lock_writes_hashes_and_digest(tiny_environments):
    uv = shutil.which("uv") or pytest.skip("uv is not on PATH")

    try:
        runtime = locking.compile_lock(uv, "linux-64", "runtime")
        test = locking.compile_lock(uv, "linux-64", "test")
    except subprocess.CalledProcessError as error:
        pytest.skip(f"uv could not reach PyPI: {error}")

    assert locking.pinned_versions(runtime) == {"six": "1.17.0"}
    assert locking.pinned_versions(test) == {"six": "1.17.0", "iniconfig": "2.0.0"}
    assert "--hash=sha256:" in runtime.read_text()
    locking.check_lock("linux-64", "runtime")
    locking.check_lock("linux-64", "test")


@pytest.mark.network
def test_failed_compile_keeps_old_lock(tiny_environments):
    uv = shutil.which("uv") or pytest.skip("uv is not on PATH")
    lock = locking.lock_path("linux-64")
    lock.write_text("# the old lock\n")
    spec = tiny_environments / "environment.yml"
    spec.write_text(spec.read_text().replace("six==1.17.0", "six==0.0.0.999"))

    with pytest.raises(subprocess.CalledProcessError):
        locking.compile_lock(uv, "linux-64", "runtime")

    assert lock.read_text() == "# the old lock\n"


def test_pyproject_change_alone_keeps_packages():
    built = {"backend": "uv", "platform": "linux-64", "lock_sha256": "a", "pyproject_sha256": "old"}

    assert provision.only_project_changed(built, {**built, "pyproject_sha256": "new"})
    assert not provision.only_project_changed(built, {**built, "lock_sha256": "b", "pyproject_sha256": "new"})
    assert not provision.only_project_changed(built, built)
    assert not provision.only_project_changed(None, built)


@pytest.mark.network
def test_relock_keeps_existing_pins(tiny_environments):
    uv = shutil.which("uv") or pytest.skip("uv is not on PATH")
    spec = tiny_environments / "environment.yml"
    spec.write_text(spec.read_text().replace("six==1.17.0", "six>=1.15"))
    lock = locking.lock_path("linux-64")
    lock.write_text("six==1.16.0\n")

    try:
        locking.compile_lock(uv, "linux-64", "runtime")
        kept = locking.pinned_versions(lock)
        locking.compile_lock(uv, "linux-64", "runtime", upgrade=True)
        upgraded = locking.pinned_versions(lock)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"uv could not reach PyPI: {error}")

    assert kept == {"six": "1.16.0"}
    assert upgraded["six"] != "1.16.0"
