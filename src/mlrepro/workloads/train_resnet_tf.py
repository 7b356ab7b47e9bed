"""Train Keras ResNet50 from scratch on CIFAR-100 and evaluate it on the test split.

    nox -s train_resnet_tf -- --epochs 1 --train-limit 1000 --test-limit 200
    mlrepro train-resnet-tf --data-dir ~/data/cifar-100-python

The defaults reproduce the original script: keras.applications.ResNet50 with
weights=None, input_shape=(32, 32, 3) and classes=100, compiled with adam and
sparse categorical cross-entropy on its softmax output, trained for 5 epochs
with batch size 64 on all 50000 training images scaled to [0, 1].

Without --data-dir, the official cifar-100-python.tar.gz is downloaded once
into the Keras cache ($KERAS_HOME/datasets, default ~/.keras/datasets) and its
sha256 is checked before it is opened. A dataset that keras.datasets.cifar100
already downloaded there is reused.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlrepro import devices
from mlrepro.data import cifar100
from mlrepro.errors import UsageError
from mlrepro.seeding import seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Defaults:
    epochs: int = 5  # passes over the training images
    batch_size: int = 64  # images per training and evaluation step
    learning_rate: float = 0.001  # Adam's step size, Keras' default for optimizer="adam"


DEFAULTS = Defaults()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR",
        help="extracted cifar-100-python folder with train, test and meta "
        "(default: download the official archive into the Keras cache)",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=int, default=DEFAULTS.epochs,
        help="passes over the training images (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="images per step (default: %(default)s)"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=DEFAULTS.learning_rate,
        help="Adam learning rate (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--train-limit", type=int, metavar="N",
        help="train on the first N training images (default: all 50000)",
    )  # fmt: skip
    parser.add_argument(
        "--test-limit", type=int, metavar="N",
        help="evaluate on the first N test images (default: all 10000)",
    )  # fmt: skip


def run(args: argparse.Namespace, record) -> dict:
    check_arguments(args)

    # Seed and device
    import keras

    if keras.backend.backend() != "tensorflow":
        raise UsageError(
            f"Keras uses the {keras.backend.backend()!r} backend; this workload needs TensorFlow. "
            "Unset KERAS_BACKEND or set it to tensorflow."
        )
    seed_everything(args.seed, args.deterministic)
    gpus = devices.tensorflow_gpus()
    device = gpus[0].removeprefix("/physical_device:") if gpus else "CPU"
    logger.info(
        "train-resnet-tf on %s, float32, seed %d; TensorFlow GPUs: %s",
        device, args.seed, ", ".join(gpus) or "none, so training runs on the CPU",
    )  # fmt: skip

    # Data
    data_dir = args.data_dir if args.data_dir is not None else cifar100.download_cifar100()
    (x_train, y_train), (x_test, y_test) = load_data(data_dir, args.train_limit, args.test_limit)

    # Model
    model = build_model(args.learning_rate)

    # Run
    # A progress bar on a terminal, one line per epoch when the output goes to a log file.
    verbose = 1 if sys.stdout.isatty() else 2
    epoch_logger = make_epoch_logger(record, len(x_train))
    history = train(model, x_train, y_train, args.epochs, args.batch_size, epoch_logger, verbose)
    test_metrics, test_seconds = evaluate(model, x_test, y_test, args.batch_size, verbose)

    # Report
    epoch_seconds = epoch_logger.epoch_seconds
    return summarize(
        args, device, history, epoch_seconds, len(x_train), test_metrics, len(x_test), test_seconds
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Reject bad numbers and a bad --data-dir before TensorFlow is imported."""
    for flag, value in [("--epochs", args.epochs), ("--batch-size", args.batch_size)]:
        if value < 1:
            raise UsageError(f"{flag} {value} is invalid; pass a positive whole number")
    for flag, value in [("--train-limit", args.train_limit), ("--test-limit", args.test_limit)]:
        if value is not None and value < 1:
            raise UsageError(
                f"{flag} {value} is invalid; pass a positive number of images, or leave it out for all"
            )
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(
            f"--learning-rate {args.learning_rate} is invalid; pass a positive, finite number such as 0.001"
        )
    if args.data_dir is not None:
        cifar100.check_folder(args.data_dir)


def load_data(data_dir: Path, train_limit: int | None, test_limit: int | None):
    """Return (x_train, y_train), (x_test, y_test) with pixels as float32 in [0, 1]."""
    label_names = cifar100.load_label_names(data_dir)
    if len(label_names) != cifar100.NUM_CLASSES:
        raise UsageError(f"{data_dir}/meta lists {len(label_names)} fine label names, but CIFAR-100 has 100")

    x_train, y_train = cifar100.load_split(data_dir, "train", train_limit)
    x_test, y_test = cifar100.load_split(data_dir, "test", test_limit)
    logger.info("CIFAR-100 from %s: %d training and %d test images", data_dir, len(x_train), len(x_test))
    return (cifar100.scale_pixels(x_train), y_train), (cifar100.scale_pixels(x_test), y_test)


def build_model(learning_rate: float):
    """Build ResNet50 with random weights for 32x32 images and 100 classes, compiled with Adam."""
    import keras

    model = keras.applications.ResNet50(
        include_top=True, weights=None, input_shape=cifar100.IMAGE_SHAPE, classes=cifar100.NUM_CLASSES
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        # The top layer already applies softmax, so the loss receives probabilities.
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
        metrics=["accuracy"],
    )
    logger.info("ResNet50: %.1fM parameters", model.count_params() / 1e6)
    return model


def make_epoch_logger(record, train_images: int):
    """Return a Keras callback that times each epoch and logs its metrics to the run record."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_seconds: list[float] = []
            self.epoch_start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.epoch_start
            self.epoch_seconds.append(seconds)
            record.log(
                epoch=epoch + 1,
                loss=float(logs["loss"]),
                accuracy=float(logs["accuracy"]),
                images_per_second=train_images / seconds,
                seconds=seconds,
            )

    return EpochLogger()


def train(model, x_train, y_train, epochs: int, batch_size: int, epoch_logger, verbose: int):
    """Fit the model and return Keras' History."""
    logger.info("Training for %d epoch(s), batch size %d", epochs, batch_size)
    return model.fit(
        x_train, y_train, epochs=epochs, batch_size=batch_size, callbacks=[epoch_logger], verbose=verbose
    )


def evaluate(model, x_test, y_test, batch_size: int, verbose: int) -> tuple[dict, float]:
    """Return the test loss and accuracy, and the seconds the evaluation took."""
    start = time.perf_counter()
    metrics = model.evaluate(x_test, y_test, batch_size=batch_size, verbose=verbose, return_dict=True)
    return metrics, time.perf_counter() - start


def summarize(
    args, device, history, epoch_seconds, train_images, test_metrics, test_images, test_seconds
) -> dict:
    """Build the flat summary: final metrics, timings and throughput."""
    summary = {
        "device": device,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "train_images": train_images,
        "test_images": test_images,
        "train_loss": float(history.history["loss"][-1]),
        "train_accuracy": float(history.history["accuracy"][-1]),
        "test_loss": float(test_metrics["loss"]),
        "test_accuracy": float(test_metrics["accuracy"]),
        "train_seconds": sum(epoch_seconds),
        "test_seconds": test_seconds,
    }
    # The first epoch also traces and compiles the training step, so it is
    # left out of the throughput whenever a later epoch exists.
    if len(epoch_seconds) > 1:
        later_images = train_images * (len(epoch_seconds) - 1)
        summary["train_images_per_second_after_first_epoch"] = later_images / sum(epoch_seconds[1:])
    else:
        summary["train_images_per_second_first_epoch"] = train_images / epoch_seconds[0]
    return summary
