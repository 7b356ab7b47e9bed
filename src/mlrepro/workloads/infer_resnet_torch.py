"""Run torchvision ResNet-50 inference and report latency, throughput and the top-5 classes.

    nox -s infer_resnet_torch
    nox -s infer_resnet_torch -- --image cat.jpg --device cpu
    nox -s infer_resnet_torch -- --weights none --device cpu --runs 3
    mlrepro infer-resnet-torch --image cat.jpg --batch-size 8 --runs 50

Weights are read from the torchvision cache, $TORCH_HOME/hub/checkpoints/
(TORCH_HOME defaults to ~/.cache/torch). When the file is missing, torch
downloads it once and checks it against the sha256 prefix in its name
(0676ba61 in resnet50-0676ba61.pth, the IMAGENET1K_V1 file) before saving it.
To run offline, copy that file into the folder, or pass --weights none for
random weights.

Without --image the input is the original script's random tensor of shape
(1, 3, 224, 224), drawn from a generator seeded with --seed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import pickle
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

from mlrepro.devices import DEVICE_CHOICES, select_torch_device, synchronize_torch_device, torch_device_name
from mlrepro.errors import UsageError
from mlrepro.seeding import seed_everything

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "IMAGENET1K_V1"  # the weights the original script loaded
NO_WEIGHTS = "none"
IMAGE_SHAPE = (3, 224, 224)  # channels, height, width of the original's random input
TOP_K = 5
# Seconds a weights download may wait on the network before it fails; torch sets no timeout.
DOWNLOAD_TIMEOUT_S = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights", default=DEFAULT_WEIGHTS, metavar="NAME",
        help="torchvision ResNet50_Weights name (IMAGENET1K_V1, IMAGENET1K_V2 or DEFAULT), "
        "or 'none' for random weights (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--image", type=Path, metavar="PATH",
        help="image file to classify, preprocessed with the weights' transforms "
        "(default: a seeded random tensor of shape 1x3x224x224)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help=f"torch device: {', '.join(DEVICE_CHOICES)} or cuda:N (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass; the input is repeated (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forward passes before the timed ones (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=20, help="timed forward passes (default: %(default)s)")


def check_arguments(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} is invalid; pass 1 or more")
    if args.runs < 1:
        raise UsageError(f"--runs {args.runs} is invalid; pass 1 or more")
    if args.warmup < 0:
        raise UsageError(f"--warmup {args.warmup} is invalid; pass 0 or more")


def resolve_weights(name: str):
    """Return the ResNet50_Weights member called `name`, or None for 'none'."""
    from torchvision.models import ResNet50_Weights

    if name.lower() == NO_WEIGHTS:
        return None
    if name not in ResNet50_Weights.__members__:
        valid = ", ".join([*ResNet50_Weights.__members__, NO_WEIGHTS])
        raise UsageError(f"--weights {name!r} is not a ResNet-50 weights name; use one of {valid}")
    return ResNet50_Weights[name]


def checkpoint_path(url: str) -> Path:
    """Return where torch.hub caches the file at `url`: <torch.hub.get_dir()>/checkpoints/<file name>."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


@contextlib.contextmanager
def socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def load_state_dict(url: str) -> dict:
    """Load a state dict from the torch.hub cache, downloading it once when it is missing.

    With check_hash=True, torch compares the downloaded file's sha256 with the
    hex digits between '-' and '.' in its name before moving it into the cache.
    A file already in the cache is loaded without a hash check. Loading uses
    weights_only=True, which unpickles tensors and plain containers only.
    """
    import torch

    path = checkpoint_path(url)
    fix = f"download it once on a machine with network access, or copy the file to {path}"
    downloading = not path.exists()
    if downloading:
        logger.info("Downloading %s to %s (once; later runs read the cache)", url, path)
    else:
        logger.info("Loading weights from %s", path)

    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            return torch.hub.load_state_dict_from_url(
                url, map_location="cpu", progress=True, check_hash=True, weights_only=True
            )
    except OSError as error:
        if not downloading:
            raise UsageError(f"the weights file {path} could not be read ({error}); {fix}") from error
        # URLError, HTTPError and socket timeouts are all OSErrors.
        raise UsageError(f"the weights file {path} is missing and downloading {url} failed ({error}); {fix}") from error
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False, which would run arbitrary pickled code.
        raise UsageError(
            f"the weights file {path} could not be loaded: it is not a plain tensor checkpoint, so "
            f"torch.load(weights_only=True) rejected it; delete it so it is downloaded again, or {fix}"
        ) from error
    except RuntimeError as error:
        if downloading and "invalid hash value" in str(error):
            raise UsageError(f"the download of {url} failed its sha256 check and was not saved ({error}); try again, or {fix}") from error
        raise UsageError(
            f"the weights file {path} could not be loaded ({error}); delete it so it is downloaded again, or {fix}"
        ) from error


def build_model(weights, device):
    """Return ResNet-50 in eval mode on `device`, with `weights` loaded, or random weights for None."""
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    if weights is not None:
        try:
            model.load_state_dict(load_state_dict(weights.url))
        except RuntimeError as error:
            raise UsageError(
                f"the weights file {checkpoint_path(weights.url)} does not fit ResNet-50 ({error}); "
                f"delete it so it is downloaded again, or copy the real {weights.name} file there"
            ) from error
    return model.eval().to(device)


def load_image(path: Path, transforms):
    """Read an image file as RGB and preprocess it with `transforms` into a float tensor of shape (3, 224, 224)."""
    from PIL import Image

    if not path.is_file():
        raise UsageError(f"--image {path} not found (resolved to {path.resolve()}); pass the path of an image file")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, Image.DecompressionBombError) as error:
        raise UsageError(f"--image {path} cannot be read as an image ({error}); pass a JPEG or PNG file") from error
    return transforms(rgb)


def random_image(seed: int):
    """Return the original script's input, torch.randn(1, 3, 224, 224), from a generator seeded with `seed`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, *IMAGE_SHAPE, generator=generator)


def make_batch(image, batch_size: int, device):
    """Repeat one image (3, H, W) or (1, 3, H, W) into a float32 batch of `batch_size` on `device`."""
    import torch

    if image.dim() == 3:
        image = image.unsqueeze(0)
    return image.repeat(batch_size, 1, 1, 1).to(device=device, dtype=torch.float32)


def time_inference(model, batch, device, warmup: int, runs: int, record):
    """Run `warmup` untimed and `runs` timed forward passes, and return the latencies in ms and the last logits."""
    import torch

    latencies_ms = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(batch)
        synchronize_torch_device(device)

        log_every = max(1, runs // 5)
        for run in range(1, runs + 1):
            start = time.perf_counter()
            logits = model(batch)
            synchronize_torch_device(device)
            latency_ms = (time.perf_counter() - start) * 1000
            latencies_ms.append(latency_ms)
            record.log(run=run, latency_ms=latency_ms)
            if run % log_every == 0 or run == runs:
                logger.info("run %d/%d: %.1f ms", run, runs, latency_ms)

    return latencies_ms, logits


def top_classes(logits, categories: list[str], k: int = TOP_K) -> list[tuple[int, str, float]]:
    """Return the k most probable (class index, name, probability) of the first image in the batch."""
    import torch

    probabilities = torch.softmax(logits[0].float().cpu(), dim=0)
    values, indices = probabilities.topk(k)
    return [(int(index), categories[index], float(value)) for value, index in zip(values, indices)]


def run(args: argparse.Namespace, record) -> dict:
    import numpy as np
    import torch
    from torchvision.models import ResNet50_Weights

    check_arguments(args)
    weights = resolve_weights(args.weights)

    # Seed and device
    seed_everything(args.seed, args.deterministic)
    device = select_torch_device(args.device)
    weights_name = weights.name if weights is not None else NO_WEIGHTS
    logger.info(
        "ResNet-50 inference on %s, float32, weights %s, seed %d, torch threads %d",
        torch_device_name(device), weights_name, args.seed, torch.get_num_threads(),
    )  # fmt: skip

    # Data: random weights have no classes of their own, so borrow IMAGENET1K_V1's transforms and names.
    reference = weights if weights is not None else ResNet50_Weights[DEFAULT_WEIGHTS]
    if args.image is not None:
        image = load_image(args.image, reference.transforms())
    else:
        image = random_image(args.seed)
    batch = make_batch(image, args.batch_size, device)

    # Model
    model = build_model(weights, device)
    if weights is None:
        logger.warning("--weights none: the model has random weights, so its top-5 classes are meaningless")

    # Run
    logger.info("Timing %d runs of batch size %d after %d warm-up runs", args.runs, args.batch_size, args.warmup)
    latencies_ms, logits = time_inference(model, batch, device, args.warmup, args.runs, record)

    # Report
    top = top_classes(logits, reference.meta["categories"])
    print(f"Top-{TOP_K} classes of {args.image if args.image is not None else 'the random input'}:")
    for rank, (index, name, probability) in enumerate(top, start=1):
        print(f"  {rank}. {name} (class {index}): {probability:.4f}")

    latencies = np.array(latencies_ms)
    return {
        "device": str(device),
        "weights": weights_name,
        "input": str(args.image) if args.image is not None else "random",
        "precision": "float32",
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "runs": args.runs,
        "latency_median_ms": float(np.median(latencies)),
        "latency_p90_ms": float(np.percentile(latencies, 90)),
        "latency_min_ms": float(latencies.min()),
        "throughput_images_per_s": float(args.batch_size * len(latencies) / (latencies.sum() / 1000)),
        "output_shape": list(logits.shape),
        "top5_indices": [index for index, _, _ in top],
        "top5_names": [name for _, name, _ in top],
        "top5_probabilities": [probability for _, _, probability in top],
    }
