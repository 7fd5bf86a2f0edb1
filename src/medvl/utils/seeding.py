"""Seeding for every random number generator medvl touches."""

from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["seed_everything", "set_deterministic"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's legacy global RNG and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def set_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (used by CPU tests and ``deterministic: true``)."""
    import torch

    torch.use_deterministic_algorithms(enabled, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not enabled
        torch.backends.cudnn.deterministic = enabled
