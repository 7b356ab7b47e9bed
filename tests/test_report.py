"""The environment report: MPS reasons with the platform queries patched, lock drift, `mlrepro env`."""

import hashlib
import json
import platform
import sys
from pathlib import Path

import pytest

from mlrepro import cli, locking, report

RUNTIME_LOCK = """\
# mlrepro runtime lock for linux-64 (python 3.11), made by `nox -s lock`.
numpy==1.26.4 \\
    --hash=sha256:aaaa
torch==2.11.0 ; sys_platform == "linux" \\
    --hash=sha256:bbbb
typing-extensions==4.12.2 \\
    --hash=sha256:cccc
"""
TEST_LOCK = RUNTIME_LOCK + """\
pytest==8.3.4 \\
    --hash=sha256:dddd
pluggy==1.5.0 \\
    --hash=sha256:eeee
"""


@pytest.fixture
def fake_locks(tmp_path, monkeypatch):
    """Point the host's runtime and test locks at small files in tmp_path."""
    paths = {"runtime": tmp_path / "requirements-linux-64.txt", "test": tmp_path / "requirements-test-linux-64.txt"}
    paths["runtime"].write_text(RUNTIME_LOCK, encoding="utf-8")
    paths["test"].write_text(TEST_LOCK, encoding="utf-8")
    monkeypatch.setattr(locking, "host_platform", lambda: "linux-64")
    monkeypatch.setattr(locking, "lock_path", lambda platform_name, role="runtime": paths[role])
    return paths


@pytest.fixture
def apple_silicon(monkeypatch):
    """An arm64 Python on macOS 14.5, with an MPS build of torch; tests change one query each."""
    import torch

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(platform, "mac_ver", lambda: ("14.5", ("", "", ""), "arm64"))
    monkeypatch.setattr(locking, "is_rosetta", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    return torch


# ----------------------------------------------------------------------------
# MPS reasons


def test_mps_reason_not_macos():
    reason = report.mps_unavailable_reason()

    assert reason.startswith("not macOS")
    assert sys.platform in reason


def test_mps_reason_rosetta(apple_silicon, monkeypatch):
    monkeypatch.setattr(locking, "is_rosetta", lambda: True)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")

    reason = report.mps_unavailable_reason()

    assert reason.startswith("x86_64 Python under Rosetta 2")
    assert "arm64 Python" in reason


def test_mps_reason_intel_mac(apple_silicon, monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")

    assert report.mps_unavailable_reason().startswith("x86_64 (Intel) Mac")


def test_mps_reason_no_mps_build(apple_silicon, monkeypatch):
    monkeypatch.setattr(apple_silicon.backends.mps, "is_built", lambda: False)

    reason = report.mps_unavailable_reason()

    assert "no MPS support" in reason
    assert "is_built() is False" in reason


def test_mps_reason_old_macos(apple_silicon, monkeypatch):
    monkeypatch.setattr(platform, "mac_ver", lambda: ("13.6.1", ("", "", ""), "arm64"))
    monkeypatch.setattr(apple_silicon, "__version__", "2.11.0")

    reason = report.mps_unavailable_reason()

    assert reason.startswith("macOS 13.6.1 is older than 14.0")
    assert "torch 2.9 and later" in reason


def test_mps_reason_old_macos_old_torch(apple_silicon, monkeypatch):
    # torch 2.8 still ran MPS on macOS 13, so the OS is not the reason there.
    monkeypatch.setattr(platform, "mac_ver", lambda: ("13.6.1", ("", "", ""), "arm64"))
    monkeypatch.setattr(apple_silicon, "__version__", "2.8.0")

    assert report.mps_unavailable_reason().startswith("unknown")


def test_mps_reason_rosetta_before_build(apple_silicon, monkeypatch):
    # An x86_64 torch also lacks MPS; Rosetta is the root cause and is named first.
    monkeypatch.setattr(locking, "is_rosetta", lambda: True)
    monkeypatch.setattr(apple_silicon.backends.mps, "is_built", lambda: False)

    assert "Rosetta 2" in report.mps_unavailable_reason()


def test_torch_facts_carry_reason(apple_silicon, monkeypatch):
    monkeypatch.setattr(apple_silicon.backends.mps, "is_built", lambda: False)
    monkeypatch.setattr(apple_silicon.backends.mps, "is_available", lambda: False)

    facts = report.torch_facts()

    assert facts["mps"]["built"] is False
    assert facts["mps"]["available"] is False
    assert "no MPS support" in facts["mps"]["reason"]


def test_os_facts_macos(apple_silicon):
    assert report.os_facts()["name"] == "macOS 14.5"


def test_parse_version():
    assert report.parse_version("2.11.0+cu130") == (2, 11, 0)
    assert report.parse_version("14.5") == (14, 5)
    assert report.parse_version("2.9.0a0") == (2, 9, 0)
    assert report.parse_version("") == ()


# ----------------------------------------------------------------------------
# Lock drift


def test_lock_drift_kinds():
    locked = {"numpy": "1.26.4", "torch": "2.11.0", "typing-extensions": "4.12.2"}
    installed = {"numpy": "2.1.0", "torch": "2.11.0", "requests": "2.32.3", "mlrepro": "0.1.0", "pip": "24.0"}

    drift = report.lock_drift(locked, installed)

    assert drift["missing"] == ["typing-extensions"]
    assert drift["different"] == [{"name": "numpy", "locked": "1.26.4", "installed": "2.1.0"}]
    assert drift["extra"] == [{"name": "requests", "installed": "2.32.3"}]


def test_lock_report_runtime_env(fake_locks):
    installed = {"numpy": "1.26.4", "torch": "2.10.0", "pytest": "8.3.4", "mlrepro": "0.1.0"}

    facts = report.lock_report(installed)

    assert facts["lock"]["role"] == "runtime"
    assert facts["lock"]["sha256"] == hashlib.sha256(fake_locks["runtime"].read_bytes()).hexdigest()
    assert facts["packages"]["torch"] == {"locked": "2.11.0", "installed": "2.10.0"}
    assert facts["drift"]["missing"] == ["typing-extensions"]
    assert facts["drift"]["different"] == [{"name": "torch", "locked": "2.11.0", "installed": "2.10.0"}]
    # pytest alone is not the whole test lock, so this is a runtime env with pytest added.
    assert facts["drift"]["extra"] == [{"name": "pytest", "installed": "8.3.4"}]


def test_lock_report_test_env(fake_locks):
    installed = {
        "numpy": "1.26.4", "torch": "2.11.0", "typing-extensions": "4.12.2",
        "pytest": "8.3.4", "pluggy": "1.5.0", "mlrepro": "0.1.0",
    }  # fmt: skip

    facts = report.lock_report(installed)

    assert facts["lock"]["role"] == "test"
    assert facts["lock"]["sha256"] == hashlib.sha256(fake_locks["test"].read_bytes()).hexdigest()
    assert set(facts["packages"]) == {"numpy", "torch", "typing-extensions", "pytest", "pluggy"}
    assert report.drift_count(facts["drift"]) == 0


def test_lock_report_test_env_drift(fake_locks):
    installed = {
        "numpy": "1.26.4", "torch": "2.11.0", "typing-extensions": "4.12.2",
        "pytest": "9.0.0", "pluggy": "1.5.0",
    }  # fmt: skip

    facts = report.lock_report(installed)

    assert facts["drift"]["different"] == [{"name": "pytest", "locked": "8.3.4", "installed": "9.0.0"}]


def test_lock_report_without_lock(monkeypatch):
    def rosetta_host():
        raise locking.LockError("this Python is x86_64 running under Rosetta 2")

    monkeypatch.setattr(locking, "host_platform", rosetta_host)

    facts = report.lock_report({"numpy": "1.26.4"})

    assert "Rosetta 2" in facts["lock"]["error"]
    assert facts["drift"] is None
    assert facts["packages"] == {}


def test_render_text_lists_drift(fake_locks):
    facts = report.collect(include_frameworks=False)
    facts.update(report.lock_report({"numpy": "2.1.0", "torch": "2.11.0", "requests": "2.32.3"}))

    text = report.render_text(facts)

    assert "missing:     typing-extensions (locked 4.12.2)" in text
    assert "different:   numpy 2.1.0 (locked 1.26.4)" in text
    assert "extra:       requests 2.32.3 (not in the lock)" in text
    assert "typing-extensions  4.12.2  MISSING  <- drift" in text


def test_cpu_model_linux():
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/cpuinfo")
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")

    model = report.cpu_model()

    assert model
    assert model in cpuinfo or model == platform.processor()


# ----------------------------------------------------------------------------
# mlrepro env on this machine


@pytest.fixture(scope="module")
def host_facts():
    return report.collect(include_frameworks=True)


def test_env_json_no_drift(capsys):
    assert cli.main(["env", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    runtime_locked = locking.pinned_versions(locking.lock_path(locking.host_platform(), "runtime"))

    assert set(runtime_locked) <= set(facts["packages"])
    for name, version in runtime_locked.items():
        assert facts["packages"][name] == {"locked": version, "installed": version}, name
    assert facts["drift"] == {"missing": [], "different": [], "extra": []}
    assert facts["lock"]["sha256"] == hashlib.sha256(
        locking.lock_path(locking.host_platform(), facts["lock"]["role"]).read_bytes()
    ).hexdigest()


def test_env_json_cpu_only_linux(capsys):
    import torch

    if not sys.platform.startswith("linux") or torch.cuda.is_available():
        pytest.skip("expects a Linux machine without a CUDA GPU")
    assert cli.main(["env", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)

    assert facts["os"]["system"] == "Linux"
    assert facts["rosetta"] is False
    assert facts["cpu_only"] is True
    assert facts["accelerators"] == []
    assert facts["tensorflow"]["gpus"] == []
    assert facts["tensorflow"]["metal_plugin"] == {"installed": None, "loaded": False}
    assert facts["torch"]["mps"]["available"] is False
    assert facts["torch"]["mps"]["reason"].startswith("not macOS")
    assert facts["torch"]["cuda"]["available"] is False


def test_env_text(capsys):
    assert cli.main(["env"]) == 0
    text = capsys.readouterr().out

    assert "drift:         none" in text
    assert f"version:       {platform.python_version()}" in text
    assert "Packages (" in text


def test_summary_is_flat(host_facts):
    summary = report.summarize(host_facts)

    assert summary["python_version"] == platform.python_version()
    assert summary["torch_version"] == host_facts["versions"]["torch"]
    assert summary["lock_drift"] == 0
    for key, value in summary.items():
        assert not isinstance(value, dict), key


def test_collect_without_frameworks():
    facts = report.collect(include_frameworks=False)

    assert "tensorflow" not in facts
    assert "torch" not in facts
    assert facts["versions"]["torch"] is not None


def test_installed_versions_skip_vendored(host_facts):
    # host_facts imported torch and TensorFlow, which import setuptools.
    if not any(Path(entry).name == "_vendor" for entry in sys.path):
        pytest.skip("no setuptools/_vendor folder on sys.path")
    locked = {name: versions["locked"] for name, versions in host_facts["packages"].items()}

    installed = report.installed_versions()

    assert report.lock_drift(locked, installed)["extra"] == []


def write_dist_info(folder: Path, name: str, version: str) -> None:
    """Install the metadata of distribution name==version into folder, as a wheel installer would."""
    dist_info = folder / f"{name}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    (dist_info / "METADATA").write_text(metadata, encoding="utf-8")


def test_installed_versions_skip_setuptools_vendor(tmp_path, monkeypatch):
    # After `import setuptools`, its _vendor folder is on sys.path, with copies of
    # zipp and of a newer packaging than the environment's.
    site_packages = tmp_path / "site-packages"
    vendor = site_packages / "setuptools" / "_vendor"
    write_dist_info(site_packages, "packaging", "24.2")
    write_dist_info(vendor, "packaging", "26.0")
    write_dist_info(vendor, "zipp", "3.23.0")
    monkeypatch.setattr(sys, "path", [str(vendor), str(site_packages)])

    installed = report.installed_versions()

    assert installed["packaging"] == "24.2"
    assert "zipp" not in installed


def test_installed_versions_env_under_vendor_name(tmp_path, monkeypatch):
    # A checkout in a folder called _vendor is not a package's vendored copies.
    site_packages = tmp_path / "_vendor" / ".venv" / "lib" / "python3.11" / "site-packages"
    write_dist_info(site_packages, "numpy", "1.26.4")
    monkeypatch.setattr(sys, "path", [str(site_packages)])

    installed = report.installed_versions()

    assert installed.get("numpy") == "1.26.4"


def test_collect_reads_packages_after_imports(fake_locks, tmp_path, monkeypatch):
    # A folder that importing a framework appends to sys.path, as setuptools does with _vendor.
    late = tmp_path / "late"
    write_dist_info(late, "late-package", "1.0")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(report, "import_frameworks", lambda: sys.path.append(str(late)))
    not_imported = {"version": None, "error": "not imported"}
    monkeypatch.setattr(report, "tensorflow_facts", lambda installed: not_imported)
    monkeypatch.setattr(report, "torch_facts", lambda: not_imported)

    facts = report.collect(include_frameworks=True)

    assert {"name": "late-package", "installed": "1.0"} in facts["drift"]["extra"]
