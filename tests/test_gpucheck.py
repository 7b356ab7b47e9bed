"""GPU-versus-CPU comparison: the tolerance, and fake devices whose outputs are perturbed."""

import dataclasses

import numpy as np
import pytest

from mlrepro import gpucheck

FAKE_GPU = "fake:0"


def fake_device(check: gpucheck.Check, perturb) -> gpucheck.Check:
    """Return the check with a fake device FAKE_GPU whose output is perturb(CPU output)."""

    def compute(device):
        output = check.compute(check.cpu_device)
        return perturb(output.copy()) if device == FAKE_GPU else output

    return dataclasses.replace(check, compute=compute)


def shift_one_element(offset):
    def perturb(output):
        output.flat[output.size // 2] += offset
        return output

    return perturb


def tf32_rounding(output):
    """Round the output to TF32's 10 mantissa bits, the precision CUDA may use for fp32 products."""
    bits = output.astype(np.float32).view(np.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(np.float32)


@pytest.fixture(scope="module")
def dense_checks():
    return gpucheck.tensorflow_checks(seed=42)


def test_tolerance_scales_with_output():
    tolerance = gpucheck.Tolerance(rtol=1e-2, atol=1e-5)
    reference = np.array([-3.0, 0.5, 2.0])

    assert tolerance.allowed(reference) == pytest.approx(1e-5 + 3e-2)


def test_compare_identical_passes():
    reference = np.linspace(-1, 1, 100, dtype=np.float32)

    result = gpucheck.compare("identity", FAKE_GPU, reference, reference.copy())

    assert result.passed
    assert result.max_abs_diff == 0.0


def test_compare_reports_largest_difference():
    reference = np.zeros(10, dtype=np.float32)
    reference[0] = 4.0  # tolerance: 1e-5 + 1e-2 * 4 = 0.04001
    output = reference.copy()
    output[3] += 0.25
    output[7] -= 0.5

    result = gpucheck.compare("shifted", FAKE_GPU, reference, output)

    assert not result.passed
    assert result.max_abs_diff == pytest.approx(0.5)
    assert result.allowed == pytest.approx(0.04001)


def test_compare_nan_fails():
    reference = np.ones(4, dtype=np.float32)
    output = reference.copy()
    output[2] = np.nan

    result = gpucheck.compare("nan", FAKE_GPU, reference, output)

    assert not result.passed
    assert result.max_abs_diff == float("inf")


def test_compare_shape_mismatch_fails():
    result = gpucheck.compare("shape", FAKE_GPU, np.ones((9, 4)), np.ones((8, 4)))

    assert not result.passed


def test_dense_checks_cpu_match(dense_checks):
    for check in dense_checks:
        [result] = gpucheck.run_check(check, [gpucheck.TENSORFLOW_CPU])

        assert result.passed, result.describe()
        assert result.max_abs_diff <= 1e-6


def test_dense_output_shape_and_relu(dense_checks):
    output = dense_checks[0].compute(gpucheck.TENSORFLOW_CPU)

    assert output.shape == (64, 1024)
    assert output.min() == 0.0
    assert 1.0 < output.max() < 20.0


def test_dense_eager_matches_graph(dense_checks):
    eager, graph = (check.compute(gpucheck.TENSORFLOW_CPU) for check in dense_checks)

    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)


def test_perturbed_fake_gpu_fails(dense_checks):
    # An error of whole units, like the tensorflow-metal graph-mode bug, in one element.
    check = fake_device(dense_checks[1], shift_one_element(12.0))

    [result] = gpucheck.run_check(check, [FAKE_GPU])

    assert not result.passed
    assert result.max_abs_diff == pytest.approx(12.0, rel=1e-4)
    assert result.device == FAKE_GPU


def test_unperturbed_fake_gpu_passes(dense_checks):
    check = fake_device(dense_checks[1], lambda output: output)

    [result] = gpucheck.run_check(check, [FAKE_GPU])

    assert result.passed
    assert result.max_abs_diff == 0.0


def test_tf32_rounding_passes(dense_checks):
    check = fake_device(dense_checks[0], tf32_rounding)

    [result] = gpucheck.run_check(check, [FAKE_GPU])

    assert result.passed, result.describe()
    assert result.max_abs_diff > 0.0


def test_run_check_computes_reference_once():
    calls = []

    def compute(device):
        calls.append(device)
        return np.ones(3)

    check = gpucheck.Check("counted", "torch", "cpu", compute)

    results = gpucheck.run_check(check, ["cuda:0", "cuda:1"])

    assert calls == ["cpu", "cuda:0", "cuda:1"]
    assert [result.device for result in results] == ["cuda:0", "cuda:1"]


def test_failure_message_names_difference_and_tolerance(dense_checks):
    check = fake_device(dense_checks[1], shift_one_element(12.0))
    results = gpucheck.run_check(check, [FAKE_GPU])

    message = gpucheck.failure_message(results)

    assert "1 of 1 GPU checks" in message
    assert "largest absolute difference from the CPU 12" in message
    assert f"exceeds the tolerance {results[0].allowed:.3g}" in message
    assert "rtol 0.01" in message


def recording(check: gpucheck.Check, outputs: list) -> gpucheck.Check:
    def compute(device):
        outputs.append(check.compute(device))
        return outputs[-1]

    return dataclasses.replace(check, compute=compute)


def test_torch_checks_cpu_match():
    # A short GPT-2 batch keeps the CPU-only run quick; the layer and batch size are the real ones.
    # "cpu:0" names the CPU too, but takes the path of a GPU: a copy of the model moved to it.
    outputs = []
    resnet, lm_head = (recording(check, outputs) for check in gpucheck.torch_checks(seed=42, lm_head_seq_len=2))

    [resnet_result] = gpucheck.run_check(resnet, ["cpu:0"])
    [lm_head_result] = gpucheck.run_check(lm_head, ["cpu:0"])

    assert [output.shape for output in outputs] == [(1, 1000), (1, 1000), (9, 2, 50257), (9, 2, 50257)]
    assert resnet_result.passed, resnet_result.describe()
    assert lm_head_result.passed, lm_head_result.describe()
    assert resnet_result.max_abs_diff <= 1e-5
    assert lm_head_result.max_abs_diff <= 1e-5


def test_torch_checks_seeded():
    first = gpucheck.torch_checks(seed=7, lm_head_seq_len=1)[1].compute(gpucheck.TORCH_CPU)
    second = gpucheck.torch_checks(seed=7, lm_head_seq_len=1)[1].compute(gpucheck.TORCH_CPU)

    np.testing.assert_array_equal(first, second)
