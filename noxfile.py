"""Sessions of mlrepro. Each builds or reuses a locked environment, then delegates.

    nox -s verify_gpu                 # versions, devices, GPU-versus-CPU checks
    nox -s train_resnet_tf -- --epochs 1
    nox -s tests                      # the whole offline suite

Arguments after `--` go to the workload (or to pytest).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "src"))

from mlrepro import condalock, dockerimage, locking, provision  # noqa: E402
from mlrepro.errors import UsageError  # noqa: E402

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

PIP_ONLY_HINT = "To update only the uv locks, run `nox -s lock -- --pip-only`"

# Hub calls hang for about 45 s before failing when the network is closed.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@nox.session
def verify_gpu(session: nox.Session) -> None:
    """Report versions and devices, and check each GPU against the CPU."""
    run_workload(session, "verify-gpu")


@nox.session
def train_resnet_tf(session: nox.Session) -> None:
    """Train Keras ResNet50 on CIFAR-100 (TensorFlow, Metal on a Mac)."""
    run_workload(session, "train-resnet-tf")


@nox.session
def train_distilgpt2(session: nox.Session) -> None:
    """Fine-tune distilgpt2 on wikitext-2 with the Hugging Face Trainer."""
    run_workload(session, "train-distilgpt2")


@nox.session
def infer_resnet_torch(session: nox.Session) -> None:
    """Run torchvision ResNet-50 inference (MPS on a Mac, else CUDA or CPU)."""
    run_workload(session, "infer-resnet-torch")


@nox.session
def bench(session: nox.Session) -> None:
    """Measure throughput and latency per device and batch size, written to benchmarks/."""
    python = locked_python(session, "runtime")
    session.run(python, "-m", "mlrepro.bench", *session.posargs, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the whole offline test suite."""
    run_pytest(session)


@nox.session
def smoke(session: nox.Session) -> None:
    """Run the end-to-end smoke tests on tiny local data only."""
    run_pytest(session, "-m", "smoke")


@nox.session
def lock(session: nox.Session) -> None:
    """Regenerate conda-lock.yml, then the uv locks; `-- --pip-only` skips conda-lock, `--upgrade` takes new versions."""
    options = set(session.posargs)
    if not options <= {"--pip-only", "--upgrade"}:
        session.error(f"invalid arguments {session.posargs}; the lock session takes --pip-only and --upgrade")
    try:
        if "--pip-only" not in options:
            conda = condalock.require_conda_executable(PIP_ONLY_HINT)
            uv = provision.find_uv(session.log)
            conda_lock = condalock.ensure_tool_python(uv, locking.host_platform(), session.log)
            condalock.lock(conda_lock, conda, session.log)
        uv = provision.find_uv(session.log)
        for platform_name in locking.PLATFORMS:
            # The pip layer of conda-lock.yml, when it exists, so that both locks pin the same versions.
            constraints = condalock.pip_constraints(platform_name)
            for role in ("runtime", "test"):
                path = locking.compile_lock(uv, platform_name, role, constraints, upgrade="--upgrade" in options)
                session.log(f"Wrote {locking.display_path(path)}")
    except locking.LockError as error:
        session.error(str(error))


@nox.session
def docker_base(session: nox.Session) -> None:
    """Build mlrepro-base:bookworm (Debian, Python 3.11) with debootstrap, for builders with no registry."""
    session.run("bash", "docker/make-base-image.sh", *session.posargs, external=True)


@nox.session
def docker_build(session: nox.Session) -> None:
    """Build the CPU image mlrepro:cpu and its test target mlrepro:cpu-test from the Linux lock."""
    try:
        options = dockerimage.parse_build_options(session.posargs)
        staged = dockerimage.stage_ca_certificates(options.ca_certs)
    except UsageError as error:
        session.error(str(error))
    session.log(f"Base image {options.base_image}; {len(staged)} extra CA certificate(s) for the build")
    for target in dockerimage.TARGETS:
        session.run(*dockerimage.build_command(target, options), external=True)


@nox.session
def docker_smoke(session: nox.Session) -> None:
    """Run verify-gpu, a non-root check, a lock drift check and `pytest -m smoke` in the images, offline."""
    for command in dockerimage.smoke_commands(session.posargs):
        session.run(*command, external=True)


def locked_python(session: nox.Session, role: str) -> str:
    try:
        return str(provision.ensure_env(role, session.log))
    except locking.LockError as error:
        session.error(str(error))


def run_workload(session: nox.Session, command: str) -> None:
    python = locked_python(session, "runtime")
    session.run(python, "-m", "mlrepro", command, *session.posargs, external=True)


def run_pytest(session: nox.Session, *args: str) -> None:
    python = locked_python(session, "test")
    session.run(python, "-m", "pytest", *args, *session.posargs, external=True, env=OFFLINE)
