"""The real conda-lock CLI (lock, render, install), offline, against a conda stand-in and local packages.

tests/conda_standin/ contains the stand-in (a `conda` built on py-rattler) and
the builders of a local file:// conda channel and a loopback PyPI index of
tiny packages. Every conda-lock run, the stand-in it calls and the index
server run in a network namespace with only loopback up (`unshare -n`), where
the kernel allows one; elsewhere they run on the host network, and still use
local packages only. Everything written stays under pytest's tmp folders.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conda_standin import channel as standin_channel
from mlrepro import condalock, locking, provision

pytestmark = pytest.mark.integration

STANDIN = Path(__file__).parent / "conda_standin" / "conda"
HOST = locking.host_platform()


def network_namespace_prefix():
    """Start a holder process in a new network namespace with loopback up; return (prefix, holder).

    The prefix (`nsenter -t PID -n`) runs a command in that namespace. Returns
    ([], None) where unprivileged namespaces, nsenter or ip are unavailable.
    """
    tools = [shutil.which(name) for name in ("unshare", "nsenter", "ip")]
    if None in tools or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return [], None

    holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
    # unshare moves itself into the new namespace before it runs sleep; wait for that.
    own_namespace = os.readlink("/proc/self/ns/net")
    for _ in range(100):
        if os.readlink(f"/proc/{holder.pid}/ns/net") != own_namespace:
            break
        time.sleep(0.01)
    prefix = ["nsenter", "-t", str(holder.pid), "-n"]
    subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], check=True)
    return prefix, holder


@pytest.fixture(scope="module")
def offline():
    """The command prefix that runs a program with no network but loopback ([] where unsupported)."""
    prefix, holder = network_namespace_prefix()
    yield prefix
    if holder is not None:
        holder.terminate()
        holder.wait()


@pytest.fixture(scope="module")
def project(tmp_path_factory, offline):
    """A project folder with environments/*.yml over the tiny channel and index, as conda-lock reads them."""
    root = tmp_path_factory.mktemp("condalock")
    channel = standin_channel.build_channel(root / "channel")
    index = standin_channel.build_pypi_index(root / "pypi")
    environments = root / "project" / "environments"
    environments.mkdir(parents=True)

    server = subprocess.Popen(
        [*offline, sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(index)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = server.stdout.readline()
        port = re.search(r"port (\d+)", banner).group(1)
        header = environment_header(channel.as_uri(), port)
        (environments / "environment.yml").write_text(
            f"name: tiny\n{header}"
            "dependencies:\n  - python=3.11\n  - tinylib=1.0\n  - pip:\n      - tinywheel<2\n"
        )
        (environments / "test.yml").write_text(
            f"name: tiny-test\ncategory: test\n{header}"
            "dependencies:\n  - tinytest\n  - pip:\n      - tinytestwheel\n"
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CONDA_STANDIN_PYTHON", sys.executable)
            # conda-lock and its vendored poetry cache package indexes here, keyed by index name.
            patch.setenv("XDG_CACHE_HOME", str(root / "cache"))
            yield root / "project"
    finally:
        server.terminate()
        server.wait()


def environment_header(channel_url, port):
    """The keys of an environment file that point conda-lock at the local channel and index only."""
    platforms = "".join(f"  - {name}\n" for name in standin_channel.PLATFORMS)
    return (
        f"channels:\n  - {channel_url}\nplatforms:\n{platforms}"
        f"pip-repositories:\n  - http://127.0.0.1:{port}/simple\nallow-pypi-requests: false\n"
    )


def sources(project):
    return [project / "environments" / "environment.yml", project / "environments" / "test.yml"]


@pytest.fixture(scope="module")
def python_command(offline):
    """The Python that runs conda-lock (the test env's), inside the offline namespace."""
    return [*offline, sys.executable]


@pytest.fixture(scope="module")
def lockfile(project, python_command):
    """conda-lock.yml of the tiny project, written by condalock.lock through the conda-lock CLI."""
    logged = []
    target = project / "conda-lock.yml"
    path = condalock.lock(
        python_command, str(STANDIN), logged.append, sources=sources(project), lockfile=target
    )
    assert any("conda_lock lock --conda" in line for line in logged)
    return path


def test_namespace_has_no_network(offline):
    if not offline:
        pytest.skip("`unshare -n` is not available here; conda-lock ran on the host network")

    probe = "import socket; socket.create_connection(('1.1.1.1', 443), timeout=2)"
    result = subprocess.run([*offline, sys.executable, "-c", probe], capture_output=True, text=True)

    assert result.returncode != 0
    assert "unreachable" in result.stderr.lower()


def test_lock_covers_every_platform(lockfile):
    lock = condalock.read_lockfile(lockfile)

    assert set(lock.platforms) == set(standin_channel.PLATFORMS)
    for platform_name in standin_channel.PLATFORMS:
        assert lock.conda_names(platform_name) == {"python", "pip", "tinylib", "tinytest"}


def test_lock_records_relative_sources(lockfile):
    parsed = yaml.safe_load(lockfile.read_text())

    assert parsed["metadata"]["sources"] == ["environments/environment.yml", "environments/test.yml"]
    assert not (lockfile.parent / "conda-lock.yml.tmp").exists()


def test_lock_content_hash_matches(lockfile, project, python_command):
    recorded = condalock.read_lockfile(lockfile).content_hash

    assert condalock.content_hashes(python_command, sources(project)) == recorded


def test_reader_matches_pyyaml(lockfile):
    lock = condalock.read_lockfile(lockfile)
    parsed = yaml.safe_load(lockfile.read_text())

    assert lock.platforms == tuple(parsed["metadata"]["platforms"])
    assert lock.content_hash == parsed["metadata"]["content_hash"]
    assert [dataclass_row(package) for package in lock.packages] == [
        (entry["name"], entry["version"], entry["manager"], entry["platform"], entry["category"])
        for entry in parsed["package"]
    ]


def dataclass_row(package):
    return (package.name, package.version, package.manager, package.platform, package.category)


def test_lock_pip_layer(lockfile):
    lock = condalock.read_lockfile(lockfile)

    for platform_name in standin_channel.PLATFORMS:
        assert lock.pip_pins(platform_name, ("main",)) == {"tinywheel": "1.0"}
        assert lock.pip_pins(platform_name) == {"tinywheel": "1.0", "tinytestwheel": "0.1"}
        assert condalock.pip_constraints(platform_name, lockfile) == ["tinytestwheel==0.1", "tinywheel==1.0"]


def test_render_explicit(lockfile, python_command, tmp_path):
    command = [*python_command, "-m", "conda_lock", "render", "--kind", "explicit", "--platform", HOST]
    command += ["--extras", "test", str(lockfile)]
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)

    rendered = (tmp_path / f"conda-{HOST}.lock").read_text()
    urls = [line for line in rendered.splitlines() if line.startswith("file://")]
    assert "@EXPLICIT" in rendered
    assert sorted(Path(url.split("#")[0]).name for url in urls) == [
        "pip-24.0-0.tar.bz2",
        "python-3.11.9-0.tar.bz2",
        "tinylib-1.0-0.tar.bz2",
        "tinytest-0.1-0.tar.bz2",
    ]
    assert any(line.startswith("# pip tinytestwheel @ http://127.0.0.1:") for line in rendered.splitlines())


def test_install_runtime_role(lockfile, python_command, tmp_path):
    prefix = tmp_path / "runtime"

    condalock.install(python_command, str(STANDIN), prefix, "runtime", HOST, lockfile)

    site_packages = prefix / "lib" / "python3.11" / "site-packages"
    assert (prefix / "share" / "tinylib" / "VERSION").read_text() == "1.0\n"
    assert (prefix / "bin" / "python").exists()
    assert (site_packages / "tinywheel.py").read_text() == '__version__ = "1.0"\n'
    assert not (prefix / "share" / "tinytest").exists()
    assert not (site_packages / "tinytestwheel.py").exists()


def test_install_test_role(lockfile, python_command, tmp_path):
    prefix = tmp_path / "test"

    condalock.install(python_command, str(STANDIN), prefix, "test", HOST, lockfile)

    site_packages = prefix / "lib" / "python3.11" / "site-packages"
    assert (prefix / "share" / "tinytest" / "VERSION").read_text() == "0.1\n"
    assert (site_packages / "tinytestwheel.py").exists()
    assert (site_packages / "tinywheel.py").exists()


def test_failed_solve_keeps_lockfile(lockfile, project, python_command, tmp_path):
    unsolvable = tmp_path / "environments" / "environment.yml"
    unsolvable.parent.mkdir()
    unsolvable.write_text(sources(project)[0].read_text().replace("tinylib=1.0", "tinylib=9.0"))
    previous = tmp_path / "conda-lock.yml"
    shutil.copyfile(lockfile, previous)

    with pytest.raises(locking.LockError, match="unchanged"):
        condalock.lock(python_command, str(STANDIN), print, sources=[unsolvable], lockfile=previous)
    assert previous.read_bytes() == lockfile.read_bytes()


def test_ensure_env_builds_then_reuses(lockfile, project, python_command, tmp_path, monkeypatch):
    # The default backend choice: CONDA_EXE is set and the lock covers this platform.
    monkeypatch.delenv(provision.BACKEND_VARIABLE, raising=False)
    monkeypatch.setenv("CONDA_EXE", str(STANDIN))
    monkeypatch.setattr(condalock, "LOCKFILE", lockfile)
    monkeypatch.setattr(condalock, "SOURCES", tuple(sources(project)))
    monkeypatch.setattr(provision, "ENVS_DIR", tmp_path / "envs")
    monkeypatch.setattr(provision, "find_uv", lambda log: "uv")
    monkeypatch.setattr(condalock, "ensure_tool_python", lambda uv, platform_name, log: python_command)
    installed = []
    monkeypatch.setattr(provision, "install_project", lambda uv, python: installed.append(python))
    logged = []

    python = provision.ensure_env("test", logged.append)
    again = provision.ensure_env("test", logged.append)

    prefix = tmp_path / "envs" / f"test-{HOST}"
    assert python == again == prefix / "bin" / "python"
    assert (prefix / "share" / "tinytest" / "VERSION").exists()
    assert provision.read_stamp(prefix)["backend"] == "conda"
    assert installed == [python]
    assert logged[-1] == f"Reusing {prefix} (lock unchanged)"


def test_ensure_env_rejects_edited_sources(lockfile, project, python_command, tmp_path, monkeypatch):
    edited = tmp_path / "environments"
    edited.mkdir()
    for source in sources(project):
        shutil.copyfile(source, edited / source.name)
    environment = edited / "environment.yml"
    environment.write_text(environment.read_text().replace("tinylib=1.0", "tinylib=2.0"))
    monkeypatch.setenv(provision.BACKEND_VARIABLE, "conda")
    monkeypatch.setenv("CONDA_EXE", str(STANDIN))
    monkeypatch.setattr(condalock, "LOCKFILE", lockfile)
    monkeypatch.setattr(condalock, "SOURCES", (environment, edited / "test.yml"))
    monkeypatch.setattr(provision, "ENVS_DIR", tmp_path / "envs")
    monkeypatch.setattr(provision, "find_uv", lambda log: "uv")
    monkeypatch.setattr(condalock, "ensure_tool_python", lambda uv, platform_name, log: python_command)

    with pytest.raises(locking.LockError, match=f"stale against environments/environment.yml .* on {HOST}"):
        provision.ensure_env("runtime", lambda line: None)
    assert not (tmp_path / "envs").exists()
