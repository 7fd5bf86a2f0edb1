"""Shared synthetic data for the alignment tests."""

from __future__ import annotations

import numpy as np
import pytest


def spec_synthetic() -> tuple[np.ndarray, np.ndarray]:
    """The data of shared/reference/alignment_metrics_spec.md §1.4 (rng 123, n=2000, d=64, rows L2-normalised)."""
    rng = np.random.default_rng(123)
    n, d = 2000, 64
    z = rng.standard_normal((n, 16))
    x = z @ rng.standard_normal((16, d)) + 0.5 * rng.standard_normal((n, d))
    y = z[:, :8] @ rng.standard_normal((8, d)) + 1.0 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x, y


@pytest.fixture(scope="session")
def spec_xy() -> tuple[np.ndarray, np.ndarray]:
    return spec_synthetic()


@pytest.fixture()
def paired() -> tuple[np.ndarray, np.ndarray]:
    """Small correlated float64 pair, n=120, d=16."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((120, 16))
    y = x @ rng.standard_normal((16, 16)) * 0.3 + 0.7 * rng.standard_normal((120, 16)) + 0.2
    return x, y
