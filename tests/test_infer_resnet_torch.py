"""Tests of the infer-resnet-torch workload on a ResNet-50 weights file in the torchvision cache layout."""

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet50_Weights, resnet50

from mlrepro import cli
from mlrepro.errors import UsageError
from mlrepro.workloads import infer_resnet_torch
from http_fixtures import closed_port_url, file_server  # noqa: F401  (pytest fixture)
from samples import extract_members

CATEGORIES = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
WEIGHTS_FILE = "resnet50-0676ba61.pth"  # the file name of IMAGENET1K_V1's url
FIXTURE_SEED = 1234  # seeds the fixture's random weights, apart from the CLI's --seed 42


@pytest.fixture(scope="session")
def cached_weights(tmp_path_factory):
    """Return a TORCH_HOME whose hub/checkpoints contains random ResNet-50 weights under IMAGENET1K_V1's name.

    The real file cannot be downloaded offline. torch checks a file's hash only
    when it downloads it, so a cached file under the real name is loaded as it is.
    """
    torch_home = tmp_path_factory.mktemp("torch-home")
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(FIXTURE_SEED)
    torch.save(resnet50(weights=None).state_dict(), checkpoints / WEIGHTS_FILE)
    return torch_home


@pytest.fixture
def torch_home(cached_weights, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(cached_weights))
    return cached_weights


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "empty-torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def no_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture(scope="session")
def reference_logits(cached_weights) -> torch.Tensor:
    """Return the logits of the fixture's weights, loaded directly, on the CLI's random input for --seed 42."""
    state_dict = torch.load(cached_weights / "hub" / "checkpoints" / WEIGHTS_FILE, weights_only=True)
    model = resnet50(weights=None)
    model.load_state_dict(state_dict)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(42))
    with torch.inference_mode():
        return model.eval()(image)


def write_jpeg(path: Path) -> Path:
    from PIL import Image

    pixels = torch.randint(0, 256, (48, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(path, format="JPEG")
    return path


def printed_top5(stdout: str) -> list[str]:
    """Return the class names of the printed "  1. name (class N): p" lines."""
    lines = stdout.split("Top-5 classes of", 1)[1].splitlines()[1:6]
    return [line.split(". ", 1)[1].rsplit(" (class ", 1)[0] for line in lines]


# Weights: the cache, the download and their errors


def test_resolve_weights_names():
    assert infer_resnet_torch.resolve_weights("IMAGENET1K_V1") is ResNet50_Weights.IMAGENET1K_V1
    assert infer_resnet_torch.resolve_weights("DEFAULT") is ResNet50_Weights.IMAGENET1K_V2
    assert infer_resnet_torch.resolve_weights("none") is None
    assert infer_resnet_torch.resolve_weights("None") is None


def test_resolve_weights_unknown():
    with pytest.raises(UsageError) as error:
        infer_resnet_torch.resolve_weights("IMAGENET21K")
    message = str(error.value)
    assert "'IMAGENET21K'" in message
    assert "IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT, none" in message


def test_checkpoint_path_follows_torch_home(empty_torch_home):
    path = infer_resnet_torch.checkpoint_path(ResNet50_Weights.IMAGENET1K_V1.url)
    assert path == empty_torch_home / "hub" / "checkpoints" / WEIGHTS_FILE


def test_cached_weights_loaded_as_is(torch_home, reference_logits):
    model = infer_resnet_torch.build_model(ResNet50_Weights.IMAGENET1K_V1, torch.device("cpu"))
    image = infer_resnet_torch.random_image(42)
    with torch.inference_mode():
        logits = model(image)
    assert not model.training
    torch.testing.assert_close(logits, reference_logits)


def test_download_checks_hash_and_caches(empty_torch_home, file_server):
    folder, base_url = file_server.folder, file_server.base_url
    state_dict = {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    staging = folder / "staging.pth"
    torch.save(state_dict, staging)
    name = f"tiny-{hashlib.sha256(staging.read_bytes()).hexdigest()[:8]}.pth"
    staging.rename(folder / name)

    loaded = infer_resnet_torch.load_state_dict(f"{base_url}/{name}")
    cached = empty_torch_home / "hub" / "checkpoints" / name
    assert cached.read_bytes() == (folder / name).read_bytes()
    torch.testing.assert_close(loaded["weight"], state_dict["weight"])

    # A second load reads the cache, even with the server's file gone.
    (folder / name).unlink()
    again = infer_resnet_torch.load_state_dict(f"{base_url}/{name}")
    torch.testing.assert_close(again["weight"], state_dict["weight"])


def test_download_hash_mismatch(empty_torch_home, file_server):
    folder, base_url = file_server.folder, file_server.base_url
    torch.save({"weight": torch.ones(2)}, folder / "tiny-deadbeef.pth")
    with pytest.raises(UsageError) as error:
        infer_resnet_torch.load_state_dict(f"{base_url}/tiny-deadbeef.pth")
    assert "failed its sha256 check" in str(error.value)
    assert 'expected "deadbeef"' in str(error.value)
    assert not (empty_torch_home / "hub" / "checkpoints" / "tiny-deadbeef.pth").exists()


def test_download_offline_names_cache(empty_torch_home):
    url = closed_port_url(WEIGHTS_FILE)
    with pytest.raises(UsageError) as error:
        infer_resnet_torch.load_state_dict(url)
    message = str(error.value)
    expected_path = empty_torch_home / "hub" / "checkpoints" / WEIGHTS_FILE
    assert f"the weights file {expected_path} is missing" in message
    assert f"copy the file to {expected_path}" in message
    assert not expected_path.exists()


def test_corrupt_cache_file(empty_torch_home):
    path = empty_torch_home / "hub" / "checkpoints" / WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="could not be loaded.*delete it"):
        infer_resnet_torch.load_state_dict(closed_port_url(WEIGHTS_FILE))


class Payload:
    """A class that torch.load(weights_only=True) must reject."""


def test_weights_only_rejects_objects(empty_torch_home):
    path = empty_torch_home / "hub" / "checkpoints" / WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    torch.save({"payload": Payload()}, path)
    with pytest.raises(UsageError, match="not a plain tensor checkpoint"):
        infer_resnet_torch.load_state_dict(closed_port_url(WEIGHTS_FILE))


def test_wrong_state_dict_rejected(empty_torch_home):
    path = empty_torch_home / "hub" / "checkpoints" / WEIGHTS_FILE
    path.parent.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(10, 2048)}, path)
    with pytest.raises(UsageError, match="does not fit ResNet-50"):
        infer_resnet_torch.build_model(ResNet50_Weights.IMAGENET1K_V1, torch.device("cpu"))


# Inputs


def test_random_image_seeded():
    first = infer_resnet_torch.random_image(7)
    assert first.shape == (1, 3, 224, 224)
    assert torch.equal(first, infer_resnet_torch.random_image(7))
    assert not torch.equal(first, infer_resnet_torch.random_image(8))


def test_make_batch_repeats_as_float32():
    image = torch.arange(3 * 4 * 4, dtype=torch.float64).reshape(3, 4, 4)
    batch = infer_resnet_torch.make_batch(image, 3, torch.device("cpu"))
    assert batch.shape == (3, 3, 4, 4)
    assert batch.dtype == torch.float32
    assert torch.equal(batch[2], image.float())


def test_load_image_uses_transforms(tmp_path):
    image = infer_resnet_torch.load_image(write_jpeg(tmp_path / "noise.jpg"), ResNet50_Weights.IMAGENET1K_V1.transforms())
    assert image.shape == (3, 224, 224)
    assert image.dtype == torch.float32
    # Normalized with ImageNet's mean and std, so values leave [0, 1].
    assert image.min() < 0


def test_top_classes_order():
    logits = torch.full((2, 1000), -10.0)
    logits[0, [5, 9, 1, 700, 3]] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    top = infer_resnet_torch.top_classes(logits, CATEGORIES)
    assert [index for index, _, _ in top] == [5, 9, 1, 700, 3]
    assert [name for _, name, _ in top] == [CATEGORIES[i] for i in (5, 9, 1, 700, 3)]
    probabilities = [probability for _, _, probability in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)


# The command line


@pytest.mark.smoke
def test_cli_cached_weights(torch_home, reference_logits, tmp_path, isolated_runs_dir):
    output = tmp_path / "summary.json"
    argv = ["infer-resnet-torch", "--device", "cpu", "--runs", "3", "--warmup", "1", "--output", str(output)]
    assert cli.main(argv) == 0

    summary = json.loads(output.read_text())
    assert summary["device"] == "cpu"
    assert summary["weights"] == "IMAGENET1K_V1"
    assert summary["latency_min_ms"] > 0
    assert summary["latency_min_ms"] <= summary["latency_median_ms"] <= summary["latency_p90_ms"]
    assert summary["throughput_images_per_s"] > 0
    assert summary["output_shape"] == [1, 1000]

    # The same top-5 as the fixture file loaded directly: the cached file is what ran.
    expected = torch.softmax(reference_logits[0], dim=0).topk(5)
    assert summary["top5_indices"] == expected.indices.tolist()
    torch.testing.assert_close(torch.tensor(summary["top5_probabilities"]), expected.values)

    metrics_files = list(isolated_runs_dir.glob("*/metrics.jsonl"))
    assert len(metrics_files) == 1
    metrics = [json.loads(line) for line in metrics_files[0].read_text().splitlines()]
    assert [entry["run"] for entry in metrics] == [1, 2, 3]
    assert all(entry["latency_ms"] > 0 for entry in metrics)


@pytest.mark.smoke
def test_cli_without_accelerator_runs_on_cpu(no_accelerator, caplog, capsys):
    # The original script left `device` undefined, a NameError, when MPS was absent.
    with caplog.at_level(logging.INFO):
        code = cli.main(["infer-resnet-torch", "--weights", "none", "--runs", "1", "--warmup", "0", "--batch-size", "2"])
    assert code == 0
    assert "No CUDA or MPS device is available; running on the CPU" in caplog.text
    assert "top-5 classes are meaningless" in caplog.text
    stdout = capsys.readouterr().out
    assert "device: cpu" in stdout
    assert "output_shape: [2, 1000]" in stdout


@pytest.mark.smoke
def test_cli_image_prints_top5(torch_home, tmp_path, capsys):
    image = write_jpeg(tmp_path / "noise.jpg")
    code = cli.main(["infer-resnet-torch", "--device", "cpu", "--image", str(image), "--runs", "1", "--warmup", "0"])
    assert code == 0
    names = printed_top5(capsys.readouterr().out)
    assert len(names) == 5
    assert all(name in CATEGORIES for name in names)


def test_cli_missing_image(torch_home, tmp_path, capsys):
    missing = tmp_path / "missing.jpg"
    assert cli.main(["infer-resnet-torch", "--device", "cpu", "--image", str(missing)]) == 2
    stderr = capsys.readouterr().err
    assert f"--image {missing} not found (resolved to {missing.resolve()})" in stderr
    assert "Traceback" not in stderr


def test_cli_unreadable_image(torch_home, tmp_path, capsys):
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not an image")
    assert cli.main(["infer-resnet-torch", "--device", "cpu", "--image", str(text_file)]) == 2
    assert "cannot identify image file" in capsys.readouterr().err


def test_cli_unknown_weights(capsys):
    assert cli.main(["infer-resnet-torch", "--weights", "IMAGENET1K_V3"]) == 2
    stderr = capsys.readouterr().err
    assert "--weights 'IMAGENET1K_V3' is not a ResNet-50 weights name" in stderr
    assert "IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT, none" in stderr


@pytest.mark.parametrize(("option", "value"), [("--runs", "0"), ("--warmup", "-1"), ("--batch-size", "0")])
def test_cli_invalid_counts(capsys, option, value):
    assert cli.main(["infer-resnet-torch", "--weights", "none", option, value]) == 2
    assert f"{option} {value} is invalid" in capsys.readouterr().err


def test_cli_absent_mps(no_accelerator, capsys):
    assert cli.main(["infer-resnet-torch", "--weights", "none", "--device", "mps"]) == 2
    assert "--device mps is not available on this machine; available: cpu" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_imagenet_sample_top5(tmp_path, capsys):
    samples = extract_members("foolbox", "foolbox/data/imagenet_", tmp_path / "imagenet")
    assert len(samples) == 20
    image = samples[0]  # imagenet_00_243.jpg, class 243 (bull mastiff)
    argv = ["infer-resnet-torch", "--weights", "none", "--device", "cpu", "--image", str(image), "--runs", "1", "--warmup", "0"]
    assert cli.main(argv) == 0
    names = printed_top5(capsys.readouterr().out)
    assert len(names) == 5
    assert all(name in CATEGORIES for name in names)
