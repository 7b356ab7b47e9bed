"""Seed every random number generator a workload touches, and opt into determinism."""

from __future__ import annotations

import logging
import os
import random
import sys

logger = logging.getLogger(__name__)

DEFAULT_SEED = 42


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy, and TensorFlow and torch when they are imported.

    With deterministic=True, TensorFlow op determinism and torch's deterministic
    algorithms are turned on; both can be slower.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)

    if "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.keras.utils.set_random_seed(seed)
        if deterministic:
            tf.config.experimental.enable_op_determinism()

    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
        if deterministic:
            # cuBLAS needs this workspace setting for deterministic matrix products.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)

    if deterministic:
        logger.warning("Deterministic algorithms are on; training can be slower")
