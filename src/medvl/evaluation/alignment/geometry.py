"""Geometry of the paired embeddings on the unit sphere: Δcos, modality gap, relative modality
gap (two forms), mean paired L2, and Wang & Isola's alignment and uniformity.

Every metric here is defined on L2-normalised rows (cosines, or distances on the sphere); the
cosine-based ones always normalise, the L2 ones normalise when ``normalize=True`` (default).
The all-pairs means (Δcos, both RMGs) are exact closed forms in ``O(n d)``:
``Σ_{i≠j} x̂_i·ŷ_j = (Σx̂)·(Σŷ) − Σ_i x̂_i·ŷ_i``, from one float64 pass over row blocks (no
normalised copy of the inputs is made). Uniformity needs the pairwise kernel and is computed in
row blocks with a float64 log-sum-exp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from medvl.evaluation.alignment.blocked import iter_sq_dist_blocks, row_slices, rows_per_block
from medvl.evaluation.alignment.validation import (
    AlignmentInputError,
    AlignmentPreconditionError,
    check_paired,
    l2_normalize_rows,
)

__all__ = [
    "alignment_loss",
    "alignment_uniformity",
    "delta_cos",
    "mean_paired_l2",
    "modality_gap",
    "modality_gap_vector",
    "rmg_sas_repo",
    "rmg_schrodi",
    "uniformity",
]


@dataclass(frozen=True)
class _SphereStats:
    """Float64 sums of one blocked pass over paired rows (normalised when requested).

    ``sum_x``/``sum_y`` (d,), ``sq_x``/``sq_y`` = Σ_i ‖x̂_i‖², ``paired_dot (n,)`` = x̂_i·ŷ_i,
    ``paired_dist (n,)`` = ‖x̂_i − ŷ_i‖.
    """

    n: int
    sum_x: torch.Tensor
    sum_y: torch.Tensor
    sq_x: float
    sq_y: float
    paired_dot: torch.Tensor
    paired_dist: torch.Tensor

    def mean_offdiag(self, which: str) -> float:
        """``mean_{i≠j}`` of ``x̂_i·x̂_j`` (``"xx"``), ``ŷ_i·ŷ_j`` (``"yy"``) or ``x̂_i·ŷ_j`` (``"xy"``)."""
        n = self.n
        if which == "xx":
            total, diag = float(self.sum_x @ self.sum_x), self.sq_x
        elif which == "yy":
            total, diag = float(self.sum_y @ self.sum_y), self.sq_y
        else:
            total, diag = float(self.sum_x @ self.sum_y), float(self.paired_dot.sum())
        return (total - diag) / (n * (n - 1))


def _sphere_stats(image: Any, text: Any, *, normalize: bool = True, memory_budget: int | None = None) -> _SphereStats:
    """One pass over row blocks (float64 per block); zero-norm rows are an error naming them."""
    x, y = check_paired(image, text, same_dim=True, min_n=2, names=("image", "text"))
    n, d = x.shape
    sum_x = torch.zeros(d, dtype=torch.float64)
    sum_y = torch.zeros(d, dtype=torch.float64)
    sq_x = sq_y = 0.0
    paired_dot = torch.empty(n, dtype=torch.float64)
    paired_dist = torch.empty(n, dtype=torch.float64)
    zero: dict[str, list[torch.Tensor]] = {"image": [], "text": []}
    rows = rows_per_block(n, d, itemsize=8, n_buffers=4, budget=memory_budget)
    for sl in row_slices(n, rows):
        xb, yb = x[sl].to(torch.float64, copy=True), y[sl].to(torch.float64, copy=True)  # never alias the inputs
        if normalize:
            for name, blk in (("image", xb), ("text", yb)):
                norms = torch.linalg.vector_norm(blk, dim=1, keepdim=True)
                bad = (norms <= 0).flatten()
                if bool(bad.any()):
                    zero[name].append(torch.nonzero(bad).flatten() + sl.start)
                blk.div_(torch.where(norms > 0, norms, 1.0))
        sum_x += xb.sum(dim=0)
        sum_y += yb.sum(dim=0)
        sq_x += float((xb * xb).sum())
        sq_y += float((yb * yb).sum())
        paired_dot[sl] = (xb * yb).sum(dim=1)
        paired_dist[sl] = torch.linalg.vector_norm(xb - yb, dim=1)
    for name, found in zero.items():
        if found:
            idx = torch.cat(found)
            listed = ", ".join(str(int(i)) for i in idx[:10])
            more = f", … ({idx.numel()} rows in total)" if idx.numel() > 10 else ""
            raise AlignmentInputError(f"{name}: rows [{listed}{more}] have zero norm and cannot be L2-normalised")
    return _SphereStats(n, sum_x, sum_y, sq_x, sq_y, paired_dot, paired_dist)


def delta_cos(image: Any, text: Any, *, memory_budget: int | None = None) -> float:
    """Δcos = mean cosine of matched pairs − mean cosine of the ``n(n−1)`` unmatched pairs (SAS repo's ``cosine_gap``)."""
    st = _sphere_stats(image, text, memory_budget=memory_budget)
    return float(st.paired_dot.mean()) - st.mean_offdiag("xy")


def modality_gap_vector(
    image: Any, text: Any, *, normalize: bool = True, memory_budget: int | None = None
) -> torch.Tensor:
    """Centroid difference ``mean(x̂) − mean(ŷ)`` (float64 ``(d,)``), Liang et al. 2022's gap vector."""
    st = _sphere_stats(image, text, normalize=normalize, memory_budget=memory_budget)
    return (st.sum_x - st.sum_y) / st.n


def modality_gap(image: Any, text: Any, *, normalize: bool = True, memory_budget: int | None = None) -> float:
    """Modality gap (Liang et al. 2022; Schrodi's L2M): ``‖mean(x̂) − mean(ŷ)‖₂``."""
    gap = modality_gap_vector(image, text, normalize=normalize, memory_budget=memory_budget)
    return float(torch.linalg.vector_norm(gap))


def mean_paired_l2(image: Any, text: Any, *, normalize: bool = True, memory_budget: int | None = None) -> float:
    """Mean L2 distance of matched pairs ``mean_i ‖x̂_i − ŷ_i‖`` (Schrodi's L2I)."""
    return float(_sphere_stats(image, text, normalize=normalize, memory_budget=memory_budget).paired_dist.mean())


def rmg_schrodi(image: Any, text: Any, *, memory_budget: int | None = None) -> float:
    """Relative modality gap as defined by Schrodi et al. (ICLR 2025, ``compute_rmg``).

    With ``dist(a, b) = 1 − (cos(a, b) + 1)/2 ∈ [0, 1]``: ``m = dist`` of the mean matched cosine
    (replaced by 1e-3 when it is ≤ 0), ``d_img``/``d_txt`` = dist of the mean cosine over the
    ordered pairs ``i ≠ j`` within each modality; ``RMG = m / (m + (d_img + d_txt)/2)``.
    (One caption per image; Schrodi's multi-caption exclusion of same-image text pairs does not arise.)
    """
    st = _sphere_stats(image, text, memory_budget=memory_budget)

    def dist(c: float) -> float:
        return 1.0 - (c + 1.0) / 2.0

    m = dist(float(st.paired_dot.mean()))
    if m <= 0:
        m = 1e-3
    d_img, d_txt = dist(st.mean_offdiag("xx")), dist(st.mean_offdiag("yy"))
    return m / (m + (d_img + d_txt) / 2.0)


def rmg_sas_repo(image: Any, text: Any, *, memory_budget: int | None = None) -> float:
    """The "relative modality gap" exactly as the SAS repo computes it (not Schrodi's definition).

    ``m = mean_i (1 − cos(x_i, y_i))``, ``S_img = Σ_{i>j} cos(x_i, x_j)`` (a similarity),
    ``D_txt = Σ_{i>j} (1 − cos(y_i, y_j))`` (a distance);
    ``RMG = m / ((S_img + D_txt) / (2n(n−1)) + m)``. The repo also drops image pairs whose cosine is
    exactly 1 (duplicates) from ``S_img``; medvl keeps them (see docs/alignment.md).
    """
    st = _sphere_stats(image, text, memory_budget=memory_budget)
    n = st.n
    n_pairs = n * (n - 1) / 2.0
    m = float((1.0 - st.paired_dot).mean())
    s_img = st.mean_offdiag("xx") * n_pairs
    d_txt = (1.0 - st.mean_offdiag("yy")) * n_pairs
    denom = (s_img + d_txt) / (2.0 * n * (n - 1)) + m
    if denom == 0:
        raise AlignmentPreconditionError("SAS-repo RMG is undefined: its denominator is 0")
    return m / denom


def alignment_loss(
    image: Any, text: Any, *, alpha: float = 2.0, normalize: bool = True, memory_budget: int | None = None
) -> float:
    """Wang & Isola (2020) alignment: ``mean_i ‖x̂_i − ŷ_i‖^α`` (lower = better aligned)."""
    st = _sphere_stats(image, text, normalize=normalize, memory_budget=memory_budget)
    return float(st.paired_dist.pow(alpha).mean())


def uniformity(x: Any, *, t: float = 2.0, normalize: bool = True, memory_budget: int | None = None,
               name: str = "x") -> float:
    """Wang & Isola (2020) uniformity: ``log mean_{i<j} exp(−t ‖x̂_i − x̂_j‖²)`` (lower = more uniform).

    Blocked over rows with a running float64 log-sum-exp; no ``(n, n)`` matrix is kept.
    """
    tx, _ = check_paired(x, x, same_dim=True, min_n=2, names=(name, name))
    if normalize:
        tx = l2_normalize_rows(tx, name)
    if t <= 0:
        raise AlignmentInputError(f"uniformity temperature t must be > 0, got {t}")
    n = tx.shape[0]
    running = -math.inf
    for sl, block in iter_sq_dist_blocks(tx, tx, same=True, budget=memory_budget, n_buffers=5):
        vals = block.to(torch.float64).mul_(-t)
        idx = torch.arange(sl.stop - sl.start)
        vals[idx, idx + sl.start] = -math.inf  # exclude i == j
        lse = float(torch.logsumexp(vals.flatten(), dim=0))
        running = float(torch.logaddexp(torch.tensor(running, dtype=torch.float64), torch.tensor(lse, dtype=torch.float64)))
    return running - math.log(n * (n - 1))


def alignment_uniformity(
    image: Any, text: Any, *, alpha: float = 2.0, t: float = 2.0, normalize: bool = True,
    memory_budget: int | None = None,
) -> dict[str, float]:
    """``alignment`` (paired), ``uniformity_image``, ``uniformity_text`` (Wang & Isola defaults α = 2, t = 2)."""
    check_paired(image, text, same_dim=True, min_n=2, names=("image", "text"))
    return {
        "alignment": alignment_loss(image, text, alpha=alpha, normalize=normalize, memory_budget=memory_budget),
        "uniformity_image": uniformity(image, t=t, normalize=normalize, memory_budget=memory_budget, name="image"),
        "uniformity_text": uniformity(text, t=t, normalize=normalize, memory_budget=memory_budget, name="text"),
    }
