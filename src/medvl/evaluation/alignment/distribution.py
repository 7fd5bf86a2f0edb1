"""Distribution distances between the two sets: CORAL and MMD² with an RBF kernel.

* CORAL (Sun & Saenko 2016): ``‖C(X) − C(Y)‖_F`` with unbiased covariances ``C(Z) = Z̄ᵀZ̄/(n−1)``.
  This is the Frobenius norm itself, as the SAS repo's ``coral_distance`` returns (its ``+1e-5·I``
  cancels); ``deep_coral_loss=True`` gives the Deep CORAL loss ``‖·‖²_F / (4d²)`` instead.
* MMD² (Gretton et al. 2012) with ``k(a, b) = exp(−‖a−b‖² / (2σ²))``:
  biased V-statistic ``mean Kxx + mean Kyy − 2 mean Kxy`` (all ``n²`` entries, diagonals included);
  unbiased statistic for *paired* samples (Gretton et al. Lemma 6, ``m = n``):
  ``Σ_{i≠j} [k(x_i,x_j) + k(y_i,y_j) − k(x_i,y_j) − k(x_j,y_i)] / (n(n−1))`` — the paired terms
  ``k(x_i, y_i)`` are excluded because they are not independent draws.
  ``σ = None`` uses the median heuristic: ``σ = sqrt(median ‖a−b‖²)`` over the **distinct pairs**
  ``a ≠ b`` of the pooled sample of ``2n`` rows (Gretton et al. 2012; self-distances, which are
  always 0, are **not** counted — ``np.median(scipy.spatial.distance.pdist(pooled,
  "sqeuclidean"))``). Exact whenever the pooled distances fit in 512 MiB (2n ≤ 16 384 float32
  rows, i.e. n ≤ 8 192 pairs), otherwise on a seeded subsample
  (:func:`medvl.evaluation.alignment.blocked.median_rows`).
  The SAS repo's ``mmd`` is ``100 · MMD²_biased`` with ``σ = 10`` (see :data:`SAS_REPO_MMD_SIGMA`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from medvl.evaluation.alignment.blocked import cross_moments, iter_sq_dist_blocks, median_sq_distance
from medvl.evaluation.alignment.validation import (
    AlignmentInputError,
    AlignmentPreconditionError,
    check_paired,
)

__all__ = ["SAS_REPO_MMD_SCALE", "SAS_REPO_MMD_SIGMA", "coral_distance", "median_bandwidth", "mmd2_rbf"]

#: The SAS repo's fixed RBF bandwidth (``_MMD_SIGMA``) and output scale (``_MMD_SCALE``).
SAS_REPO_MMD_SIGMA: float = 10.0
SAS_REPO_MMD_SCALE: float = 100.0


def coral_distance(x: Any, y: Any, *, deep_coral_loss: bool = False, memory_budget: int | None = None) -> float:
    """CORAL distance ``‖C(X) − C(Y)‖_F`` of paired ``(n, d)`` sets (unbiased covariances, float64)."""
    tx, ty = check_paired(x, y, same_dim=True, min_n=2, names=("x", "y"))
    mom = cross_moments(tx, ty, want=("xx", "yy"), budget=memory_budget)
    assert mom.xx is not None and mom.yy is not None
    diff = (mom.xx - mom.yy) / (mom.n - 1)
    sq = float((diff * diff).sum())
    if deep_coral_loss:
        d = tx.shape[1]
        return sq / (4.0 * d * d)
    return math.sqrt(sq)


def median_bandwidth(
    x: torch.Tensor, y: torch.Tensor, *, median_max_rows: int | None = None, seed: int = 0,
    memory_budget: int | None = None,
) -> float:
    """Median-heuristic RBF σ: ``sqrt(median ‖a − b‖²)`` over the distinct pairs of the pooled rows."""
    med = median_sq_distance(torch.cat([x, y]), include_self=False, max_rows=median_max_rows, seed=seed,
                             budget=memory_budget)
    if not med > 0:
        raise AlignmentPreconditionError("median pairwise distance is 0; the median-heuristic bandwidth is undefined")
    return math.sqrt(med)


def _rbf_block_sums(
    a: torch.Tensor, b: torch.Tensor, gamma: float, *, same: bool, budget: int | None
) -> float:
    total = 0.0
    for _, block in iter_sq_dist_blocks(a, b, same=same, budget=budget, n_buffers=4):
        total += float(block.mul_(-gamma).exp_().sum(dtype=torch.float64))
    return total


def mmd2_rbf(
    x: Any,
    y: Any,
    *,
    sigma: float | None = None,
    unbiased: bool = False,
    scale: float = 1.0,
    median_max_rows: int | None = None,
    seed: int = 0,
    memory_budget: int | None = None,
) -> float:
    """``scale · MMD²`` between paired ``(n, d)`` sets with an RBF kernel of width ``sigma``.

    Blocked: three passes (``Kxx``, ``Kyy``, ``Kxy`` block sums, float64 accumulation). The biased
    value is ≥ 0 up to rounding; the unbiased one can be slightly negative.
    """
    tx, ty = check_paired(x, y, same_dim=True, min_n=2, names=("x", "y"))
    if sigma is None:
        sigma = median_bandwidth(tx, ty, median_max_rows=median_max_rows, seed=seed, memory_budget=memory_budget)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise AlignmentInputError(f"MMD sigma must be a finite number > 0, got {sigma}")
    n = tx.shape[0]
    gamma = 1.0 / (2.0 * sigma * sigma)
    sxx = _rbf_block_sums(tx, tx, gamma, same=True, budget=memory_budget)
    syy = _rbf_block_sums(ty, ty, gamma, same=True, budget=memory_budget)
    sxy = _rbf_block_sums(tx, ty, gamma, same=False, budget=memory_budget)
    if not unbiased:
        return scale * (sxx + syy - 2.0 * sxy) / (n * n)
    paired = float(torch.exp(-gamma * ((tx - ty) ** 2).sum(dim=1)).sum(dtype=torch.float64))
    # k(a, a) = 1 on the diagonals of Kxx and Kyy.
    return scale * ((sxx - n) + (syy - n) - 2.0 * (sxy - paired)) / (n * (n - 1))
