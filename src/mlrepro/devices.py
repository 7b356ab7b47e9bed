"""Pick the torch device and list TensorFlow's GPUs: all device logic lives here.

torch: CUDA first, then Apple's MPS, then the CPU. `--device` forces one, and
asking for a device that is absent is a UsageError listing those present.
TensorFlow: a Mac's Metal plugin (tensorflow-metal) shows up as a "GPU"
physical device, like CUDA GPUs do elsewhere.
"""

from __future__ import annotations

import logging

from mlrepro.errors import UsageError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def available_torch_devices() -> list[str]:
    """Return the torch device types usable here, best first; "cpu" is always last."""
    import torch

    available = []
    if torch.cuda.is_available():
        available.append("cuda")
    if torch.backends.mps.is_available():
        available.append("mps")
    available.append("cpu")
    return available


def select_torch_device(requested: str = "auto"):
    """Return the torch.device to run on; log a line when an automatic choice falls back to the CPU."""
    import torch

    available = available_torch_devices()
    if requested in (None, "", "auto"):
        device_type = available[0]
        if device_type == "cpu":
            logger.warning("No CUDA or MPS device is available; running on the CPU")
        return torch.device(device_type)

    device_type, separator, index = requested.partition(":")
    if device_type not in DEVICE_CHOICES[1:]:
        raise UsageError(f"--device {requested!r} is not a device type; use one of {', '.join(DEVICE_CHOICES)}")
    if device_type not in available:
        raise UsageError(
            f"--device {requested} is not available on this machine; available: {', '.join(available)} "
            "(or pass --device auto)"
        )
    if separator:
        # torch.device accepts "mps:1" and "cpu:1", but MPS and the CPU have one device each, index 0.
        count = torch.cuda.device_count() if device_type == "cuda" else 1
        if not index.isdigit() or int(index) >= count:
            raise UsageError(
                f"--device {requested}: this machine has {count} {device_type} device(s), "
                f"{device_type}:0 to {device_type}:{count - 1}"
            )
    return torch.device(requested)


def synchronize_torch_device(device) -> None:
    """Wait for the queued work on a CUDA or MPS device to finish, so a clock read after it is accurate."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def torch_device_name(device) -> str:
    """Describe a torch.device for logs: the GPU's name for CUDA."""
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return "cpu"


def mps_status() -> dict[str, bool]:
    """Return whether this torch build has MPS and whether it can be used now."""
    import torch

    return {"built": torch.backends.mps.is_built(), "available": torch.backends.mps.is_available()}


def cuda_status() -> dict[str, object]:
    """Return CUDA availability, the CUDA version torch was built with, and device names."""
    import torch

    available = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    return {"available": available, "version": torch.version.cuda, "devices": names}


def tensorflow_gpus() -> list[str]:
    """Return the names of TensorFlow's visible GPU devices (Metal or CUDA)."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]
