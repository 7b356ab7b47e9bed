"""The Docker image's build logic that runs without a Docker daemon.

docker/check-platform.sh runs here against the committed locks, with fake
`dpkg` and `python3.11` programs standing in for a base image. The image itself
is built and tested by `nox -s docker_build docker_smoke`, which .ci/run calls.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlrepro import dockerimage, locking, provision
from mlrepro.errors import UsageError

CHECK_PLATFORM = locking.ROOT / "docker" / "check-platform.sh"
LINUX_PLATFORMS = ("linux-64", "linux-aarch64")


def make_base_image(tmp_path: Path, architecture: str, python: str | None = "ok") -> Path:
    """Return a PATH folder that looks like a base image: dpkg, and python3.11 unless python is None.

    python="no-venv" makes `python3.11 -c 'import ensurepip, venv'` fail, as on Debian
    without python3.11-venv.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("head", "sed"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    write_program(bin_dir / "dpkg", f'echo "{architecture}"')
    if python == "ok":
        write_program(bin_dir / "python3.11", 'if [ "$1" = --version ]; then echo "Python 3.11.9"; fi')
    elif python == "no-venv":
        write_program(bin_dir / "python3.11", "echo \"No module named 'ensurepip'\" >&2; exit 1")
    return bin_dir


def write_program(path: Path, body: str) -> None:
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)


def copy_linux_locks(tmp_path: Path) -> Path:
    lock_dir = tmp_path / "environments"
    lock_dir.mkdir()
    for platform_name in LINUX_PLATFORMS:
        for role in ("runtime", "test"):
            shutil.copy(locking.lock_path(platform_name, role), lock_dir)
    return lock_dir


def run_check_platform(
    bin_dir: Path, lock_dir: Path, lock_platform: str = "auto"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/sh", str(CHECK_PLATFORM), str(lock_dir), lock_platform],
        env={"PATH": str(bin_dir)}, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("architecture", "platform_name"), [("amd64", "linux-64"), ("arm64", "linux-aarch64")]
)
def test_check_platform_selects_lock(tmp_path, architecture, platform_name):
    lock_dir = copy_linux_locks(tmp_path)
    bin_dir = make_base_image(tmp_path, architecture)

    result = run_check_platform(bin_dir, lock_dir)

    assert result.returncode == 0, result.stderr
    selected = (lock_dir / "selected.env").read_text(encoding="utf-8")
    assert f"LOCK_PLATFORM={platform_name}\n" in selected
    assert f"PYTHON={bin_dir / 'python3.11'}\n" in selected
    assert "Python 3.11.9" in result.stdout


def test_check_platform_rejects_other_arch_lock(tmp_path):
    result = run_check_platform(
        make_base_image(tmp_path, "amd64"), copy_linux_locks(tmp_path), "linux-aarch64"
    )

    assert result.returncode == 1
    assert "LOCK_PLATFORM=linux-aarch64 does not match this build's architecture amd64" in result.stderr
    assert "whose lock is linux-64" in result.stderr


def test_check_platform_rejects_unknown_arch(tmp_path):
    result = run_check_platform(make_base_image(tmp_path, "ppc64el"), copy_linux_locks(tmp_path))

    assert result.returncode == 1
    assert "no lock for the architecture ppc64el" in result.stderr


def test_check_platform_rejects_swapped_lock(tmp_path):
    lock_dir = copy_linux_locks(tmp_path)
    shutil.copy(lock_dir / "requirements-linux-aarch64.txt", lock_dir / "requirements-linux-64.txt")

    result = run_check_platform(make_base_image(tmp_path, "amd64"), lock_dir)

    assert result.returncode == 1
    assert "requirements-linux-64.txt does not hold the lock for linux-64" in result.stderr


def test_check_platform_rejects_missing_lock(tmp_path):
    lock_dir = copy_linux_locks(tmp_path)
    (lock_dir / "requirements-test-linux-aarch64.txt").unlink()

    result = run_check_platform(make_base_image(tmp_path, "arm64"), lock_dir)

    assert result.returncode == 1
    assert "requirements-test-linux-aarch64.txt is missing" in result.stderr


def test_check_platform_requires_python(tmp_path):
    result = run_check_platform(make_base_image(tmp_path, "amd64", python=None), copy_linux_locks(tmp_path))

    assert result.returncode == 1
    assert "the base image has no python3.11" in result.stderr
    assert "docker/make-base-image.sh" in result.stderr


def test_check_platform_requires_venv(tmp_path):
    result = run_check_platform(
        make_base_image(tmp_path, "amd64", python="no-venv"), copy_linux_locks(tmp_path)
    )

    assert result.returncode == 1
    assert "cannot create virtual environments" in result.stderr
    assert "python3.11-venv" in result.stderr


def test_build_options_defaults():
    options = dockerimage.parse_build_options([], environ={})

    assert options.base_image == "python:3.11-slim-bookworm"
    assert options.ca_certs is None
    assert options.network is None
    assert options.lock_platform == "auto"
    assert options.docker_args == ()


def test_build_options_from_environment(tmp_path):
    environ = {"MLREPRO_BASE_IMAGE": "mlrepro-base:bookworm", "MLREPRO_CA_CERTS_DIR": str(tmp_path)}

    options = dockerimage.parse_build_options(["--network", "host", "--no-cache"], environ=environ)

    assert options.base_image == "mlrepro-base:bookworm"
    assert options.ca_certs == tmp_path
    assert options.network == "host"
    assert options.docker_args == ("--no-cache",)


def test_build_options_reject_missing_ca_dir(tmp_path):
    with pytest.raises(UsageError, match=r"--ca-certs .*absent is not a folder"):
        dockerimage.parse_build_options(["--ca-certs", str(tmp_path / "absent")], environ={})


def test_build_options_reject_unknown_platform():
    with pytest.raises(UsageError, match="invalid choice: 'osx-arm64'"):
        dockerimage.parse_build_options(["--lock-platform", "osx-arm64"], environ={})


def test_build_command_runtime_target():
    options = dockerimage.parse_build_options(
        ["--base-image", "base:1", "--network", "host", "--pull"], environ={}
    )

    command = dockerimage.build_command("runtime", options)

    assert command[:2] == ["docker", "build"]
    assert command[command.index("--file") + 1] == "docker/Dockerfile"
    assert command[command.index("--target") + 1] == "runtime"
    assert command[command.index("--tag") + 1] == "mlrepro:cpu"
    assert "BASE_IMAGE=base:1" in command
    assert command[command.index("--network") + 1] == "host"
    assert command[-2:] == ["--pull", "."]


def test_stage_ca_certificates_replaces_old(tmp_path):
    source = tmp_path / "certs"
    (source / "corp").mkdir(parents=True)
    (source / "proxy.crt").write_text("PROXY", encoding="utf-8")
    (source / "corp" / "root.crt").write_text("ROOT", encoding="utf-8")
    (source / "notes.txt").write_text("not a certificate", encoding="utf-8")
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    (staging_dir / "stale.crt").write_text("OLD", encoding="utf-8")
    (staging_dir / "README.md").write_text("kept", encoding="utf-8")

    staged = dockerimage.stage_ca_certificates(source, staging_dir)

    assert sorted(path.name for path in staged) == ["corp-root.crt", "proxy.crt"]
    assert sorted(path.name for path in staging_dir.iterdir()) == ["README.md", "corp-root.crt", "proxy.crt"]
    assert (staging_dir / "corp-root.crt").read_text(encoding="utf-8") == "ROOT"


def test_stage_ca_certificates_none_empties(tmp_path):
    (tmp_path / "old.crt").write_text("OLD", encoding="utf-8")

    assert dockerimage.stage_ca_certificates(None, tmp_path) == []
    assert list(tmp_path.glob("*.crt")) == []


def test_stage_ca_certificates_rejects_empty(tmp_path):
    source = tmp_path / "certs"
    source.mkdir()

    with pytest.raises(UsageError, match="contains no \\*.crt file"):
        dockerimage.stage_ca_certificates(source, tmp_path / "staging")


def test_smoke_commands_run_offline():
    commands = dockerimage.smoke_commands(["-x"])

    for command in commands:
        assert command[command.index("--network") + 1] == "none"
    assert commands[0][-3:] == ["mlrepro:cpu", "verify-gpu", "--no-record"]
    assert commands[-1][-4:] == ["mlrepro:cpu-test", "-m", "smoke", "-x"]


def test_smoke_commands_check_drift():
    commands = dockerimage.smoke_commands()

    drift_check = ["--entrypoint", "python", "mlrepro:cpu", "-c", dockerimage.NO_DRIFT_CHECK]
    assert any(command[-5:] == drift_check for command in commands)


def run_no_drift_check(tmp_path: Path, drift: dict | None) -> subprocess.CompletedProcess:
    """Run NO_DRIFT_CHECK with a fake `mlrepro` that prints an env report with this drift."""
    lock = {"path": "environments/requirements-linux-64.txt"} if drift is not None else {"error": "no lock"}
    facts = {
        "lock": lock,
        "packages": {"numpy": {"locked": "1.26.4", "installed": "1.26.4"}},
        "drift": drift,
    }
    (tmp_path / "facts.json").write_text(json.dumps(facts), encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_program(bin_dir / "mlrepro", f'[ "$*" = "env --json" ] || exit 3; cat "{tmp_path / "facts.json"}"')
    return subprocess.run(
        [sys.executable, "-c", dockerimage.NO_DRIFT_CHECK],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_no_drift_check_passes(tmp_path):
    result = run_no_drift_check(tmp_path, {"missing": [], "different": [], "extra": []})

    assert result.returncode == 0, result.stderr
    assert "requirements-linux-64.txt: 1 packages, no drift" in result.stdout


def test_no_drift_check_fails_on_extra(tmp_path):
    # What setuptools' vendored copies looked like before installed_versions skipped them.
    extra = [{"name": "zipp", "installed": "3.23.0"}]

    result = run_no_drift_check(tmp_path, {"missing": [], "different": [], "extra": extra})

    assert result.returncode == 1
    assert '"extra": [{"name": "zipp", "installed": "3.23.0"}]' in result.stderr


def test_no_drift_check_fails_without_lock(tmp_path):
    result = run_no_drift_check(tmp_path, None)

    assert result.returncode == 1
    assert "mlrepro env found no lock: no lock" in result.stderr


def test_uv_requirements_pin_provision_version():
    text = (locking.ROOT / "docker" / "requirements-uv.txt").read_text(encoding="utf-8")

    assert re.search(r"^uv==(\S+) \\$", text, re.MULTILINE).group(1) == provision.UV_VERSION
    assert text.count("--hash=sha256:") >= 2
