"""Blocked n×n machinery: every pairwise quantity is reduced block by block under a memory budget.

No function here materialises an ``(n, n)`` matrix. Row blocks of the first set are paired
with the whole second set, the ``(rows, n)`` block is reduced (sums, row sums, top-k) and
dropped. The block height is chosen so that the live ``(rows, n)`` buffers fit in the budget
(default :data:`DEFAULT_MEMORY_BUDGET_BYTES`). Block products run in the input precision
(float32 inputs stay float32 for speed); every accumulation is float64.

Feature-space moments (means, ``X̄ᵀX̄``, ``X̄ᵀȲ``) are accumulated over row blocks in float64
as well, so an ``(n, d)`` float64 copy of the inputs is never made.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "MEDIAN_STORE_BYTES",
    "CrossMoments",
    "column_means",
    "cross_moments",
    "iter_dot_blocks",
    "iter_sq_dist_blocks",
    "median_rows",
    "median_sq_distance",
    "resolve_budget",
    "row_slices",
    "rows_per_block",
]

#: Default memory budget for the live block buffers of one metric (1 GiB).
DEFAULT_MEMORY_BUDGET_BYTES: int = 1 << 30


def resolve_budget(budget: int | None) -> int:
    """Return ``budget`` in bytes (``None`` → the default); it must be positive."""
    if budget is None:
        return DEFAULT_MEMORY_BUDGET_BYTES
    if budget <= 0:
        raise ValueError(f"memory budget must be a positive number of bytes, got {budget}")
    return int(budget)


def rows_per_block(n_rows: int, n_cols: int, *, itemsize: int, n_buffers: int, budget: int | None) -> int:
    """Rows per block so that ``n_buffers`` buffers of ``(rows, n_cols)`` items fit in ``budget`` bytes.

    At least one row is always processed (a budget smaller than one row is exceeded by that row).
    """
    per_row = max(1, n_cols * itemsize * n_buffers)
    return int(max(1, min(n_rows, resolve_budget(budget) // per_row)))


def row_slices(n: int, rows: int) -> Iterator[slice]:
    """Consecutive slices of ``rows`` rows covering ``range(n)``."""
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def column_means(x: torch.Tensor, *, budget: int | None = None) -> torch.Tensor:
    """Column means of ``x`` ``(n, d)`` as float64 ``(d,)``, accumulated block by block."""
    rows = rows_per_block(x.shape[0], x.shape[1], itemsize=8, n_buffers=2, budget=budget)
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for sl in row_slices(x.shape[0], rows):
        total += x[sl].to(torch.float64).sum(dim=0)
    return total / x.shape[0]


@dataclass(frozen=True)
class CrossMoments:
    """Float64 first and (uncentred-by-n) second moments of two paired sets.

    ``xx = X̄ᵀX̄``, ``yy = ȲᵀȲ``, ``xy = X̄ᵀȲ`` (sums, not divided by n), ``x_sq``/``y_sq`` the
    per-row squared norms of the centred rows; ``xx``/``yy``/``xy``/``x_sq``/``y_sq`` are
    ``None`` when not requested.
    """

    n: int
    mean_x: torch.Tensor
    mean_y: torch.Tensor
    xx: torch.Tensor | None
    yy: torch.Tensor | None
    xy: torch.Tensor | None
    x_sq: torch.Tensor | None
    y_sq: torch.Tensor | None


def cross_moments(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    want: tuple[str, ...] = ("xx", "yy", "xy"),
    budget: int | None = None,
) -> CrossMoments:
    """Centre ``x (n, dx)`` and ``y (n, dy)`` on their own means and accumulate ``want`` in float64.

    ``want`` ⊆ {"xx", "yy", "xy", "x_sq", "y_sq"}. Two passes over the data (means, then products).
    """
    n = x.shape[0]
    mean_x, mean_y = column_means(x, budget=budget), column_means(y, budget=budget)
    dx, dy = x.shape[1], y.shape[1]
    out: dict[str, torch.Tensor] = {}
    if "xx" in want:
        out["xx"] = torch.zeros(dx, dx, dtype=torch.float64)
    if "yy" in want:
        out["yy"] = torch.zeros(dy, dy, dtype=torch.float64)
    if "xy" in want:
        out["xy"] = torch.zeros(dx, dy, dtype=torch.float64)
    if "x_sq" in want:
        out["x_sq"] = torch.empty(n, dtype=torch.float64)
    if "y_sq" in want:
        out["y_sq"] = torch.empty(n, dtype=torch.float64)
    rows = rows_per_block(n, dx + dy, itemsize=8, n_buffers=2, budget=budget)
    for sl in row_slices(n, rows):
        xb = x[sl].to(torch.float64) - mean_x
        yb = y[sl].to(torch.float64) - mean_y
        if "xx" in out:
            out["xx"].addmm_(xb.T, xb)
        if "yy" in out:
            out["yy"].addmm_(yb.T, yb)
        if "xy" in out:
            out["xy"].addmm_(xb.T, yb)
        if "x_sq" in out:
            out["x_sq"][sl] = (xb * xb).sum(dim=1)
        if "y_sq" in out:
            out["y_sq"][sl] = (yb * yb).sum(dim=1)
    return CrossMoments(
        n=n,
        mean_x=mean_x,
        mean_y=mean_y,
        xx=out.get("xx"),
        yy=out.get("yy"),
        xy=out.get("xy"),
        x_sq=out.get("x_sq"),
        y_sq=out.get("y_sq"),
    )


def iter_dot_blocks(
    a: torch.Tensor, b: torch.Tensor, *, budget: int | None = None, n_buffers: int = 2
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, a[rows] @ b.T)`` for row blocks of ``a``; each block is ``(len(rows), len(b))``.

    ``n_buffers`` is how many ``(rows, len(b))`` buffers the caller keeps alive at once.
    """
    rows = rows_per_block(a.shape[0], b.shape[0], itemsize=a.element_size(), n_buffers=n_buffers, budget=budget)
    for sl in row_slices(a.shape[0], rows):
        yield sl, a[sl] @ b.T


def iter_sq_dist_blocks(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    same: bool = False,
    budget: int | None = None,
    n_buffers: int = 2,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, D²)`` with ``D²[i, j] = ‖a_i − b_j‖²`` (clamped at 0) for row blocks of ``a``.

    When ``same`` (``a`` and ``b`` are the same set) the diagonal is set to exactly 0.
    """
    a_sq = (a * a).sum(dim=1)
    b_sq = a_sq if same else (b * b).sum(dim=1)
    for sl, block in iter_dot_blocks(a, b, budget=budget, n_buffers=n_buffers):
        block.mul_(-2.0).add_(a_sq[sl, None]).add_(b_sq[None, :]).clamp_(min=0.0)
        if same:
            idx = torch.arange(sl.stop - sl.start)
            block[idx, idx + sl.start] = 0.0
        yield sl, block


#: Bytes the exact median bandwidth may hold for its distinct distances (outside the block budget).
MEDIAN_STORE_BYTES: int = 512 * 1024**2


def median_rows(n: int, *, max_rows: int | None = None, itemsize: int = 4) -> int:
    """Rows the median bandwidth is computed on: all ``n`` when that is cheap, else a subsample size.

    Exact (all rows) when the ``n(n−1)/2`` distinct squared distances fit in
    :data:`MEDIAN_STORE_BYTES` at ``itemsize`` bytes each (n ≤ 16 384 float32 or 11 585 float64
    rows) and ``n`` is within ``max_rows`` (``None``: no cap); otherwise the largest row count
    that satisfies both.
    """
    limit = MEDIAN_STORE_BYTES // max(itemsize, 1)
    fit = int((1 + math.isqrt(1 + 8 * limit)) // 2)  # largest r with r(r−1)/2 ≤ limit
    rows = min(n, fit if max_rows is None else min(fit, max_rows))
    return max(rows, min(n, 2))


def median_sq_distance(
    x: torch.Tensor,
    *,
    include_self: bool = True,
    max_rows: int | None = None,
    seed: int = 0,
    budget: int | None = None,
) -> float:
    """Median of the squared Euclidean distances between the rows of ``x``, exactly.

    ``include_self=True``: the median of all ``n²`` entries of the distance matrix, its ``n``
    diagonal zeros included and every pair counted twice — Kornblith et al.'s ``gram_rbf``
    (``np.median`` of the full matrix), used by RBF CKA. ``include_self=False``: the median over
    the ``n(n−1)/2`` distinct pairs ``i < j`` (``np.median(scipy.spatial.distance.pdist(x,
    "sqeuclidean"))``) — Gretton et al.'s median heuristic, used by MMD.

    Exact on all rows when their distinct distances fit in :data:`MEDIAN_STORE_BYTES`
    (:func:`median_rows`); otherwise — or above ``max_rows`` — on a seeded uniform subsample of
    :func:`median_rows` rows. The distances are computed in row blocks under ``budget`` in the
    input precision and only the upper triangle is kept (outside ``budget``).
    """
    n = x.shape[0]
    rows = median_rows(n, max_rows=max_rows, itemsize=x.element_size())
    if rows < n:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.sort(torch.randperm(n, generator=gen)[:rows]).values
        x = x[idx]
        n = rows
    n_pairs = n * (n - 1) // 2
    values = torch.empty(n_pairs, dtype=x.dtype)
    sq = (x * x).sum(dim=1)
    block_rows = rows_per_block(n, n, itemsize=x.element_size(), n_buffers=3, budget=budget)
    filled = 0
    for sl in row_slices(n, block_rows):
        cols = x[sl.start + 1 :]  # only j > i for the rows of this block
        if len(cols) == 0:
            break
        block = (x[sl] @ cols.T).mul_(-2.0).add_(sq[sl, None]).add_(sq[None, sl.start + 1 :]).clamp_(min=0.0)
        r = torch.arange(sl.stop - sl.start)[:, None]
        c = torch.arange(len(cols))[None, :]
        upper = block[c >= r]  # row-major: for row i, columns j = i+1 … n−1
        values[filled : filled + upper.numel()] = upper
        filled += upper.numel()
    assert filled == n_pairs
    arr = values.numpy()
    if not include_self:
        return float(np.median(arr))
    # the full matrix: n zeros, then every distinct distance twice; n² entries in total
    total = n * n

    def kth(p: int) -> float:  # p-th smallest (0-based) of the full multiset
        return 0.0 if p < n else float(np.partition(arr, (p - n) // 2)[(p - n) // 2])

    if total % 2:
        return kth(total // 2)
    return (kth(total // 2 - 1) + kth(total // 2)) / 2.0
