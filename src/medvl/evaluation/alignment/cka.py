"""Centered Kernel Alignment (Kornblith et al., ICML 2019).

``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` on ``(n, n)`` Gram matrices of the
two sets (which may have different d). Two estimators of HSIC:

* biased: ``⟨HKH, HLH⟩`` (``H`` the centring matrix);
* debiased (Song et al. 2012 / Székely–Rizzo U-centring, Kornblith's ``debiased=True``), with
  ``K̃, L̃`` the Gram matrices with zeroed diagonals:
  ``tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · (K̃1)ᵀ(L̃1)`` (constant factors cancel).

Both only need ``ΣK∘L``, the row sums and the diagonals, which is how the kernel form is
computed here: one blocked pass, never an ``(n, n)`` matrix. Linear CKA is done in feature
space (``‖X̄ᵀȲ‖²_F / (‖X̄ᵀX̄‖_F ‖ȲᵀȲ‖_F)``, the SAS repo's ``linear_cka`` and Kornblith's
``feature_space_linear_cka``) at ``O(n d²)``.

RBF kernel: ``k(a, b) = exp(−‖a−b‖² / (2 · threshold² · median(D²)))``, where the median runs
over all ``n²`` squared distances of that set, **the n diagonal zeros included** (Kornblith's
``gram_rbf`` takes ``np.median`` of the full matrix; the demo uses threshold 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from medvl.evaluation.alignment.blocked import cross_moments, iter_sq_dist_blocks, median_sq_distance
from medvl.evaluation.alignment.validation import (
    AlignmentInputError,
    AlignmentPreconditionError,
    check_paired,
)

__all__ = ["GramStats", "hsic_from_stats", "kernel_cka", "linear_cka", "rbf_gram_stats"]


@dataclass(frozen=True)
class GramStats:
    """Sufficient statistics of two symmetric Gram matrices ``K``, ``L`` (float64).

    ``kl``/``kk``/``ll`` = ``Σ_ij K∘L`` / ``K∘K`` / ``L∘L``; ``row_k``/``row_l`` row sums ``(n,)``;
    ``diag_k``/``diag_l`` diagonals ``(n,)``.
    """

    n: int
    kl: float
    kk: float
    ll: float
    row_k: torch.Tensor
    row_l: torch.Tensor
    diag_k: torch.Tensor
    diag_l: torch.Tensor


def _hsic_pair(
    n: int, prod: float, rk: torch.Tensor, rl: torch.Tensor, dk: torch.Tensor, dl: torch.Tensor, debiased: bool
) -> float:
    if not debiased:
        sk, sl = float(rk.sum()), float(rl.sum())
        return prod - 2.0 / n * float(rk @ rl) + sk * sl / (n * n)
    # zero-diagonal versions
    prod_t = prod - float(dk @ dl)
    rk_t, rl_t = rk - dk, rl - dl
    sk_t, sl_t = float(rk_t.sum()), float(rl_t.sum())
    return prod_t + sk_t * sl_t / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(rk_t @ rl_t)


def hsic_from_stats(stats: GramStats, *, debiased: bool = False) -> tuple[float, float, float]:
    """``(HSIC(K,L), HSIC(K,K), HSIC(L,L))`` up to a common factor, from :class:`GramStats`."""
    n = stats.n
    if debiased and n < 4:
        raise AlignmentPreconditionError(f"debiased HSIC/CKA needs n ≥ 4, got n = {n}")
    kl = _hsic_pair(n, stats.kl, stats.row_k, stats.row_l, stats.diag_k, stats.diag_l, debiased)
    kk = _hsic_pair(n, stats.kk, stats.row_k, stats.row_k, stats.diag_k, stats.diag_k, debiased)
    ll = _hsic_pair(n, stats.ll, stats.row_l, stats.row_l, stats.diag_l, stats.diag_l, debiased)
    return kl, kk, ll


def _cka_ratio(kl: float, kk: float, ll: float) -> float:
    if not (kk > 0 and ll > 0):
        raise AlignmentPreconditionError(
            "CKA is undefined: one set has no variance under this kernel (all rows identical?)"
        )
    return kl / math.sqrt(kk * ll)


def linear_cka(x: Any, y: Any, *, debiased: bool = False, memory_budget: int | None = None) -> float:
    """Linear CKA of paired ``x (n, dx)``, ``y (n, dy)`` (dx ≠ dy allowed), feature-space form, float64.

    Biased: ``‖X̄ᵀȲ‖²_F / (‖X̄ᵀX̄‖_F ‖ȲᵀȲ‖_F)``. Debiased: the U-centred HSIC (see module doc);
    with centred features ``K̃1 = −diag(K)``, so it also only needs the d×d products and the row norms.
    """
    tx, ty = check_paired(x, y, same_dim=False, min_n=4 if debiased else 2, names=("x", "y"))
    mom = cross_moments(tx, ty, want=("xx", "yy", "xy", "x_sq", "y_sq"), budget=memory_budget)
    assert mom.xx is not None and mom.yy is not None and mom.xy is not None
    assert mom.x_sq is not None and mom.y_sq is not None
    n = mom.n
    kl, kk, ll = (float((m * m).sum()) for m in (mom.xy, mom.xx, mom.yy))
    if not debiased:
        return _cka_ratio(kl, kk, ll)
    # Linear Gram of centred rows: row sums are 0, diagonal = squared row norms.
    zeros = torch.zeros(n, dtype=torch.float64)
    stats = GramStats(n, kl, kk, ll, zeros, zeros, mom.x_sq, mom.y_sq)
    return _cka_ratio(*hsic_from_stats(stats, debiased=True))


def rbf_gram_stats(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    threshold: float = 1.0,
    median_max_rows: int | None = None,
    seed: int = 0,
    memory_budget: int | None = None,
) -> GramStats:
    """Blocked :class:`GramStats` of the RBF Gram matrices of ``x`` and ``y`` (median bandwidth each)."""
    if threshold <= 0:
        raise AlignmentInputError(f"RBF threshold must be > 0, got {threshold}")
    n = x.shape[0]
    scales = []
    for z, name in ((x, "x"), (y, "y")):
        med = median_sq_distance(z, include_self=True, max_rows=median_max_rows, seed=seed, budget=memory_budget)
        if not med > 0:
            raise AlignmentPreconditionError(f"{name}: median squared distance is 0 (mostly duplicate rows); RBF bandwidth undefined")
        scales.append(-1.0 / (2.0 * threshold**2 * med))
    kl = kk = ll = 0.0
    row_k = torch.empty(n, dtype=torch.float64)
    row_l = torch.empty(n, dtype=torch.float64)
    # K and L row blocks, their products and float64 reduction temporaries: ~6 float32-sized buffers.
    blocks_y = iter_sq_dist_blocks(y, y, same=True, budget=memory_budget, n_buffers=6)
    for (sl, kb), (_, lb) in zip(
        iter_sq_dist_blocks(x, x, same=True, budget=memory_budget, n_buffers=6), blocks_y, strict=True
    ):
        kb.mul_(scales[0]).exp_()
        lb.mul_(scales[1]).exp_()
        kl += float((kb * lb).sum(dtype=torch.float64))
        kk += float((kb * kb).sum(dtype=torch.float64))
        ll += float((lb * lb).sum(dtype=torch.float64))
        row_k[sl] = kb.sum(dim=1, dtype=torch.float64)
        row_l[sl] = lb.sum(dim=1, dtype=torch.float64)
    ones = torch.ones(n, dtype=torch.float64)  # exp(0) on the diagonal
    return GramStats(n, kl, kk, ll, row_k, row_l, ones, ones.clone())


def kernel_cka(
    x: Any,
    y: Any,
    *,
    kernel: str = "rbf",
    threshold: float = 1.0,
    debiased: bool = False,
    median_max_rows: int | None = None,
    seed: int = 0,
    memory_budget: int | None = None,
) -> float:
    """Kernel CKA of paired ``x``, ``y`` computed in row blocks (no ``(n, n)`` matrix is kept).

    ``kernel``: ``"rbf"`` (median-distance bandwidth scaled by ``threshold``) or ``"linear"``
    (equals :func:`linear_cka`, kept for checking). The RBF median (all ``n²`` entries, diagonal
    zeros included, as Kornblith's ``gram_rbf``) is exact when the distances fit in 512 MiB
    (n ≤ 16 384 float32 rows) and ``n ≤ median_max_rows`` (``None``: no cap), otherwise estimated on a
    seeded subsample (:func:`medvl.evaluation.alignment.blocked.median_rows`).
    """
    tx, ty = check_paired(x, y, same_dim=False, min_n=4 if debiased else 2, names=("x", "y"))
    if kernel == "linear":
        return linear_cka(tx, ty, debiased=debiased, memory_budget=memory_budget)
    if kernel != "rbf":
        raise AlignmentInputError(f"unknown CKA kernel {kernel!r}; choose 'rbf' or 'linear'")
    stats = rbf_gram_stats(
        tx, ty, threshold=threshold, median_max_rows=median_max_rows, seed=seed, memory_budget=memory_budget
    )
    return _cka_ratio(*hsic_from_stats(stats, debiased=debiased))
