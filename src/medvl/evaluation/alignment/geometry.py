"""Geometry of the paired embeddings on the unit sphere: Δcos, modality gap, relative modality
gap (two forms), mean paired L2, and Wang & Isola's alignment and uniformity.

Every metric here is defined on L2-normalised rows (cosines, or distances on the sphere); the
cosine-based ones always normalise, the L2 ones normalise when ``normalize=True`` (default).
The all-pairs means (Δcos, both RMGs) are exact closed forms in ``O(n d)``:
``Σ_{i≠j} x̂_i·ŷ_j = (Σx̂)·(Σŷ) − Σ_i x̂_i·ŷ_i``. Uniformity needs the pairwise kernel and is
computed in row blocks with a float64 log-sum-exp.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from medvl.evaluation.alignment.blocked import iter_sq_dist_blocks
from medvl.evaluation.alignment.validation import AlignmentInputError, check_paired, l2_normalize_rows

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


def _unit_pair(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    tx, ty = check_paired(x, y, same_dim=True, min_n=2, names=("image", "text"))
    return l2_normalize_rows(tx, "image"), l2_normalize_rows(ty, "text")


def _maybe_unit_pair(x: Any, y: Any, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if normalize:
        return _unit_pair(x, y)
    return check_paired(x, y, same_dim=True, min_n=2, names=("image", "text"))


def _sum64(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=0, dtype=torch.float64)


def _mean_offdiag_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """``mean_{i≠j} â_i·b̂_j`` for unit rows, closed form, float64."""
    n = a.shape[0]
    total = float(_sum64(a) @ _sum64(b))
    diag = float((a.to(torch.float64) * b.to(torch.float64)).sum())
    return (total - diag) / (n * (n - 1))


def _paired_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.to(torch.float64) * b.to(torch.float64)).sum(dim=1)


def delta_cos(image: Any, text: Any) -> float:
    """Δcos = mean cosine of matched pairs − mean cosine of the ``n(n−1)`` unmatched pairs (SAS repo's ``cosine_gap``)."""
    x, y = _unit_pair(image, text)
    return float(_paired_cos(x, y).mean()) - _mean_offdiag_cos(x, y)


def modality_gap_vector(image: Any, text: Any, *, normalize: bool = True) -> torch.Tensor:
    """Centroid difference ``mean(x̂) − mean(ŷ)`` (float64 ``(d,)``), Liang et al. 2022's gap vector."""
    x, y = _maybe_unit_pair(image, text, normalize)
    return (_sum64(x) - _sum64(y)) / x.shape[0]


def modality_gap(image: Any, text: Any, *, normalize: bool = True) -> float:
    """Modality gap (Liang et al. 2022; Schrodi's L2M): ``‖mean(x̂) − mean(ŷ)‖₂``."""
    return float(torch.linalg.vector_norm(modality_gap_vector(image, text, normalize=normalize)))


def mean_paired_l2(image: Any, text: Any, *, normalize: bool = True) -> float:
    """Mean L2 distance of matched pairs ``mean_i ‖x̂_i − ŷ_i‖`` (Schrodi's L2I)."""
    x, y = _maybe_unit_pair(image, text, normalize)
    return float(torch.linalg.vector_norm(x.to(torch.float64) - y.to(torch.float64), dim=1).mean())


def rmg_schrodi(image: Any, text: Any) -> float:
    """Relative modality gap as defined by Schrodi et al. (ICLR 2025, ``compute_rmg``).

    With ``dist(a, b) = 1 − (cos(a, b) + 1)/2 ∈ [0, 1]``: ``m = dist`` of the mean matched cosine
    (replaced by 1e-3 when it is ≤ 0), ``d_img``/``d_txt`` = dist of the mean cosine over the
    ordered pairs ``i ≠ j`` within each modality; ``RMG = m / (m + (d_img + d_txt)/2)``.
    (One caption per image; Schrodi's multi-caption exclusion of same-image text pairs does not arise.)
    """
    x, y = _unit_pair(image, text)

    def dist(c: float) -> float:
        return 1.0 - (c + 1.0) / 2.0

    m = dist(float(_paired_cos(x, y).mean()))
    if m <= 0:
        m = 1e-3
    d_img, d_txt = dist(_mean_offdiag_cos(x, x)), dist(_mean_offdiag_cos(y, y))
    return m / (m + (d_img + d_txt) / 2.0)


def rmg_sas_repo(image: Any, text: Any) -> float:
    """The "relative modality gap" exactly as the SAS repo computes it (not Schrodi's definition).

    ``m = mean_i (1 − cos(x_i, y_i))``, ``S_img = Σ_{i>j} cos(x_i, x_j)`` (a similarity),
    ``D_txt = Σ_{i>j} (1 − cos(y_i, y_j))`` (a distance);
    ``RMG = m / ((S_img + D_txt) / (2n(n−1)) + m)``. The repo also drops image pairs whose cosine is
    exactly 1 (duplicates) from ``S_img``; medvl keeps them (see docs/alignment.md).
    """
    x, y = _unit_pair(image, text)
    n = x.shape[0]
    n_pairs = n * (n - 1) / 2.0
    m = float((1.0 - _paired_cos(x, y)).mean())
    s_img = _mean_offdiag_cos(x, x) * n_pairs
    d_txt = (1.0 - _mean_offdiag_cos(y, y)) * n_pairs
    denom = (s_img + d_txt) / (2.0 * n * (n - 1)) + m
    if denom == 0:
        raise AlignmentInputError("SAS-repo RMG is undefined: its denominator is 0")
    return m / denom


def alignment_loss(image: Any, text: Any, *, alpha: float = 2.0, normalize: bool = True) -> float:
    """Wang & Isola (2020) alignment: ``mean_i ‖x̂_i − ŷ_i‖^α`` (lower = better aligned)."""
    x, y = _maybe_unit_pair(image, text, normalize)
    return float(torch.linalg.vector_norm(x.to(torch.float64) - y.to(torch.float64), dim=1).pow(alpha).mean())


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
        "alignment": alignment_loss(image, text, alpha=alpha, normalize=normalize),
        "uniformity_image": uniformity(image, t=t, normalize=normalize, memory_budget=memory_budget, name="image"),
        "uniformity_text": uniformity(text, t=t, normalize=normalize, memory_budget=memory_budget, name="text"),
    }
