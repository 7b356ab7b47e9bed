"""Unit tests of mlrepro.devices with torch's CUDA and MPS availability patched."""

import logging

import pytest
import torch

from mlrepro import devices
from mlrepro.errors import UsageError


@pytest.fixture
def machine(monkeypatch):
    """Return a function that makes torch report the given CUDA device count and MPS state."""

    def patch(cuda_count: int = 0, mps: bool = False, mps_built: bool | None = None) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.backends.mps, "is_built", lambda: mps if mps_built is None else mps_built)

    return patch


@pytest.mark.parametrize(
    ("cuda_count", "mps", "expected"),
    [(1, True, ["cuda", "mps", "cpu"]), (2, False, ["cuda", "cpu"]), (0, True, ["mps", "cpu"]), (0, False, ["cpu"])],
)
def test_available_devices_order(machine, cuda_count, mps, expected):
    machine(cuda_count=cuda_count, mps=mps)
    assert devices.available_torch_devices() == expected


def test_auto_prefers_cuda(machine):
    machine(cuda_count=1, mps=True)
    assert devices.select_torch_device("auto") == torch.device("cuda")


def test_auto_picks_mps_without_cuda(machine):
    machine(cuda_count=0, mps=True)
    assert devices.select_torch_device("auto") == torch.device("mps")


def test_auto_falls_back_to_cpu(machine, caplog):
    machine(cuda_count=0, mps=False)
    with caplog.at_level(logging.WARNING, logger="mlrepro.devices"):
        device = devices.select_torch_device("auto")
    assert device == torch.device("cpu")
    assert "running on the CPU" in caplog.text
    assert [record.levelno for record in caplog.records] == [logging.WARNING]


@pytest.mark.parametrize("requested", [None, ""])
def test_empty_request_means_auto(machine, requested):
    machine(cuda_count=0, mps=True)
    assert devices.select_torch_device(requested) == torch.device("mps")


def test_auto_with_accelerator_logs_nothing(machine, caplog):
    machine(cuda_count=1, mps=False)
    with caplog.at_level(logging.WARNING, logger="mlrepro.devices"):
        devices.select_torch_device("auto")
    assert caplog.records == []


def test_explicit_cpu_no_fallback_warning(machine, caplog):
    machine(cuda_count=1, mps=True)
    with caplog.at_level(logging.WARNING, logger="mlrepro.devices"):
        device = devices.select_torch_device("cpu")
    assert device == torch.device("cpu")
    assert caplog.records == []


def test_explicit_mps_when_present(machine):
    machine(cuda_count=1, mps=True)
    assert devices.select_torch_device("mps") == torch.device("mps")


def test_absent_mps_lists_present(machine):
    machine(cuda_count=1, mps=False)
    with pytest.raises(UsageError) as error:
        devices.select_torch_device("mps")
    message = str(error.value)
    assert "--device mps is not available" in message
    assert "available: cuda, cpu" in message


def test_absent_cuda_lists_present(machine):
    machine(cuda_count=0, mps=False)
    with pytest.raises(UsageError, match="available: cpu"):
        devices.select_torch_device("cuda")


@pytest.mark.parametrize("requested", ["gpu", "CUDA", "tpu:0", "metal"])
def test_bad_name_rejected(machine, requested):
    machine(cuda_count=1, mps=True)
    with pytest.raises(UsageError) as error:
        devices.select_torch_device(requested)
    message = str(error.value)
    assert repr(requested) in message
    assert "auto, cuda, mps, cpu" in message


def test_cuda_index_out_of_range(machine):
    machine(cuda_count=1)
    with pytest.raises(UsageError) as error:
        devices.select_torch_device("cuda:3")
    message = str(error.value)
    assert "--device cuda:3" in message
    assert "1 cuda device(s), cuda:0 to cuda:0" in message


def test_cuda_index_in_range(machine):
    machine(cuda_count=2)
    assert devices.select_torch_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("requested", ["cuda:", "cuda:x", "cuda:-1"])
def test_cuda_malformed_index(machine, requested):
    machine(cuda_count=2)
    with pytest.raises(UsageError, match="cuda:0 to cuda:1"):
        devices.select_torch_device(requested)


def test_mps_index_beyond_zero(machine):
    machine(mps=True)
    assert devices.select_torch_device("mps:0") == torch.device("mps", 0)
    with pytest.raises(UsageError, match="1 mps device"):
        devices.select_torch_device("mps:1")


def test_mps_status_built_not_available(machine):
    machine(mps=False, mps_built=True)
    assert devices.mps_status() == {"built": True, "available": False}


def test_cuda_status_without_cuda(machine):
    machine(cuda_count=0)
    status = devices.cuda_status()
    assert status["available"] is False
    assert status["devices"] == []


def test_device_name_cpu_and_mps():
    assert devices.torch_device_name(torch.device("cpu")) == "cpu"
    assert devices.torch_device_name(torch.device("mps")) == "mps (Apple GPU)"


@pytest.mark.parametrize(("device_type", "expected_calls"), [("cpu", []), ("cuda", ["cuda"]), ("mps", ["mps"])])
def test_synchronize_per_device(monkeypatch, device_type, expected_calls):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("cuda"))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("mps"))
    devices.synchronize_torch_device(torch.device(device_type))
    assert calls == expected_calls
