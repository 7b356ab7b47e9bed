"""Report versions and devices, and check each GPU's results against the CPU.

    nox -s verify_gpu
    nox -s verify_gpu -- --require-gpu --output verify_gpu.json
    mlrepro verify-gpu [--require-gpu]

Prints the environment report of `mlrepro env`, without the package table.
Then runs the correctness checks of mlrepro.gpucheck on each TensorFlow GPU and
on each torch accelerator (CUDA or MPS). TensorFlow runs a dense layer, eagerly
and in tf.function, and torch runs ResNet-50 and GPT-2's output layer. A GPU
output further from the CPU's than the stated tolerance fails the run (exit 1)
with the largest difference printed. On a CPU-only machine the checks are
skipped and the run succeeds, unless --require-gpu is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from mlrepro import devices, gpucheck, report
from mlrepro.errors import CheckFailed
from mlrepro.runs import RunRecord
from mlrepro.seeding import seed_everything

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--require-gpu", action="store_true",
        help="exit 1 when neither TensorFlow nor torch can use a GPU "
        "(default: report a CPU-only machine and exit 0)",
    )  # fmt: skip


def run(args: argparse.Namespace, record: RunRecord) -> dict:
    # seed and device: TensorFlow is imported before torch, the order known to work
    import tensorflow  # noqa: F401
    import torch  # noqa: F401

    # Memory growth can only be set before TensorFlow first touches a GPU, so this goes first.
    tensorflow_devices = gpucheck.tensorflow_check_devices()
    torch_devices = torch_accelerators()
    seed_everything(args.seed, args.deterministic)
    logger.info(
        "verify_gpu: TensorFlow GPUs %s, torch accelerators %s, fp32, seed %d",
        tensorflow_devices or "none", torch_devices or "none", args.seed,
    )  # fmt: skip

    # environment report
    facts = report.collect(include_frameworks=True)
    print(report.render_text(facts, packages=False))
    summary = report.summarize(facts)
    summary["gpus_checked"] = tensorflow_devices + torch_devices

    # checks
    if not tensorflow_devices and not torch_devices:
        summary["checks"] = "skipped: no GPU"
        if args.require_gpu:
            raise CheckFailed(no_gpu_message(facts), summary)
        logger.warning("No GPU is usable here: the GPU-versus-CPU checks are skipped")
        return summary

    results = run_checks(tensorflow_devices, torch_devices, args.seed)
    for result in results:
        record.log(**dataclasses.asdict(result))

    # report
    failed = [result for result in results if not result.passed]
    summary["checks"] = "failed" if failed else "passed"
    summary["checks_run"] = len(results)
    summary["checks_failed"] = len(failed)
    summary["max_abs_diff"] = max(result.max_abs_diff for result in results)
    summary["check_results"] = [dataclasses.asdict(result) for result in results]
    if failed:
        raise CheckFailed(gpucheck.failure_message(results), summary)
    return summary


def torch_accelerators() -> list[str]:
    """Return every torch accelerator device: each CUDA device by index, then "mps"."""
    available = devices.available_torch_devices()
    found = []
    if "cuda" in available:
        found += [f"cuda:{index}" for index in range(len(devices.cuda_status()["devices"]))]
    if "mps" in available:
        found.append("mps")
    return found


def run_checks(
    tensorflow_devices: list[str], torch_devices: list[str], seed: int
) -> list[gpucheck.CheckResult]:
    """Run each framework's checks on its GPUs. A framework with no GPU is skipped with a log line."""
    results = []
    if tensorflow_devices:
        for check in gpucheck.tensorflow_checks(seed):
            results += gpucheck.run_check(check, tensorflow_devices)
    else:
        logger.info("TensorFlow sees no GPU: its checks are skipped")

    if torch_devices:
        for check in gpucheck.torch_checks(seed):
            results += gpucheck.run_check(check, torch_devices)
    else:
        logger.info("torch has no CUDA or MPS device: its checks are skipped")
    return results


def no_gpu_message(facts: dict) -> str:
    """Explain why no GPU is usable, with the likely fix for an M-chip Mac."""
    message = "no GPU: TensorFlow sees no GPU device and torch has neither CUDA nor MPS"
    mps_reason = facts["torch"].get("mps", {}).get("reason")
    if mps_reason:
        message += f" (MPS: {mps_reason})"
    metal = facts["tensorflow"].get("metal_plugin", {})
    if metal.get("installed"):
        message += f"; tensorflow-metal {metal['installed']} is installed, but TensorFlow lists no GPU"
    return (
        message + "; on an M-chip Mac check that Python is arm64 (see `mlrepro env`) "
        "and tensorflow-metal is installed"
    )
