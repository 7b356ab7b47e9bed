"""verify_gpu end to end through the CLI, with GPU availability patched and fake GPUs."""

import dataclasses
import json

import pytest

from mlrepro import cli, gpucheck
from mlrepro.workloads import verify_gpu

FAKE_GPU = "fake:0"


def fake_checks(builder, offset):
    """Wrap a check builder so that FAKE_GPU returns the CPU output plus `offset` in one element."""

    def build(seed, **kwargs):
        checks = []
        for check in builder(seed, **kwargs):

            def compute(device, check=check):
                output = check.compute(check.cpu_device)
                if device == FAKE_GPU:
                    output = output.copy()
                    output.flat[0] += offset
                return output

            checks.append(dataclasses.replace(check, compute=compute))
        return checks

    return build


@pytest.fixture
def gpus(monkeypatch):
    """Set the GPUs verify_gpu finds: gpus(tensorflow=[...], torch=[...])."""

    def set_gpus(tensorflow=(), torch=()):
        monkeypatch.setattr(gpucheck, "tensorflow_check_devices", lambda: list(tensorflow))
        monkeypatch.setattr(verify_gpu, "torch_accelerators", lambda: list(torch))

    return set_gpus


def run_cli(tmp_path, *args):
    output = tmp_path / "summary.json"
    code = cli.main(["verify-gpu", "--output", str(output), *args])
    return code, json.loads(output.read_text(encoding="utf-8"))


def test_cpu_only_skips_checks(tmp_path, gpus, caplog):
    gpus()

    code, summary = run_cli(tmp_path)

    assert code == 0
    assert summary["checks"] == "skipped: no GPU"
    assert summary["gpus_checked"] == []
    assert "checks are skipped" in caplog.text
    assert summary["tensorflow_version"]
    assert summary["lock_drift"] == 0


def test_require_gpu_fails_without_gpu(tmp_path, gpus, caplog, isolated_runs_dir):
    gpus()

    code, summary = run_cli(tmp_path, "--require-gpu")

    assert code == 1
    assert summary["checks"] == "skipped: no GPU"
    assert "no GPU: TensorFlow sees no GPU device and torch has neither CUDA nor MPS" in caplog.text
    assert "check that Python is arm64 (see `mlrepro env`)" in caplog.text
    [record_summary] = isolated_runs_dir.glob("*-verify-gpu/summary.json")
    assert json.loads(record_summary.read_text(encoding="utf-8"))["status"] == "failed"


def test_no_gpu_message_names_mps_reason():
    facts = {
        "torch": {"mps": {"reason": "macOS 13.6 is older than 14.0"}},
        "tensorflow": {"metal_plugin": {"installed": "1.2.0", "loaded": False}},
    }

    message = verify_gpu.no_gpu_message(facts)

    assert "(MPS: macOS 13.6 is older than 14.0)" in message
    assert "tensorflow-metal 1.2.0 is installed, but TensorFlow lists no GPU" in message


def test_perturbed_tensorflow_gpu_fails(tmp_path, gpus, monkeypatch, caplog):
    gpus(tensorflow=[FAKE_GPU])
    monkeypatch.setattr(gpucheck, "tensorflow_checks", fake_checks(gpucheck.tensorflow_checks, 25.0))

    code, summary = run_cli(tmp_path)

    assert code == 1
    assert summary["checks"] == "failed"
    assert summary["checks_failed"] == 2
    assert summary["max_abs_diff"] == pytest.approx(25.0, rel=1e-4)
    assert "2 of 2 GPU checks differ from the CPU beyond the tolerance" in caplog.text
    assert "tf.function on fake:0: largest absolute difference from the CPU 25" in caplog.text


def test_unperturbed_tensorflow_gpu_passes(tmp_path, gpus, monkeypatch):
    gpus(tensorflow=[FAKE_GPU])
    monkeypatch.setattr(gpucheck, "tensorflow_checks", fake_checks(gpucheck.tensorflow_checks, 0.0))

    code, summary = run_cli(tmp_path, "--require-gpu")

    assert code == 0
    assert summary["checks"] == "passed"
    assert summary["checks_run"] == 2
    assert summary["max_abs_diff"] == 0.0
    assert summary["gpus_checked"] == [FAKE_GPU]


def test_perturbed_torch_gpu_fails(tmp_path, gpus, monkeypatch):
    # The torch path: only the GPT-2 output layer, with a short batch, to keep the test quick.
    torch_checks = gpucheck.torch_checks

    def lm_head_only(seed):
        return torch_checks(seed, lm_head_seq_len=1)[1:]

    gpus(torch=[FAKE_GPU])
    monkeypatch.setattr(gpucheck, "torch_checks", fake_checks(lm_head_only, 3.0))

    code, summary = run_cli(tmp_path)

    assert code == 1
    assert summary["checks_failed"] == 1
    assert summary["check_results"][0]["check"].startswith("torch Linear(768, 50257), batch 9x1")
    assert summary["check_results"][0]["passed"] is False
