"""Spectral Alignment Score (SAS), Gambetti et al. 2026 (arXiv 2606.04613).

Definition (reference: ``iamalegambetti/medical-vlms-assessment:metrics.py::spectral_alignment_score``,
written out in ``shared/reference/alignment_metrics_spec.md`` §1). ``X`` is the anchor, ``Y`` the
projected modality, both ``(n, d)`` paired rows in one embedding space:

1. ``X̄, Ȳ`` = each set centred on its own mean (no scaling, no whitening).
2. ``K = X̄ᵀX̄ / n`` (biased, d×d); eigenpairs ``λ_1 ≥ … ≥ λ_d``, ``V``.
3. ``Z_x = X̄V``, ``Z_y = ȲV``; ``c_k = mean_i Z_x[i,k] Z_y[i,k]``; ``s_k = mean_i Z_y[i,k]²``.
4. ``ρ_k = c_k / sqrt(λ_k s_k + ε)`` with ``ε = 1e-8`` inside the square root (as the reference).
5. ``τ = quantile_linear(λ, 1 − topq)``; kept modes ``M = {k : λ_k ≥ τ}``.
6. ``SAS(X→Y) = clip(Σ_M λ_k |ρ_k| / Σ_M λ_k, 0, 1)``.

All sums are float64 and run over row blocks, so ``n`` is limited only by time, not memory.

**medvl extension (not in the paper's code): per-record SAS.** With the same ``M``, ``λ``, ``ρ``,
``sas_i = Σ_M w_k · sign(ρ_k) · Z_x[i,k] Z_y[i,k] / sqrt(λ_k s_k + ε)`` with ``w_k = λ_k / Σ_M λ``.
Its mean over records equals the (unclipped) score exactly, ε included; the clip never acts
because ``0 ≤ |ρ_k| < 1`` when ``ε > 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medvl.evaluation.alignment.blocked import cross_moments, row_slices, rows_per_block
from medvl.evaluation.alignment.validation import (
    AlignmentInputError,
    AlignmentPreconditionError,
    check_paired,
)

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_TOPQ",
    "SASResult",
    "SpectralStats",
    "kept_mode_count",
    "sas_directional",
    "sas_per_record",
    "sas_topq_sweep",
    "spectral_alignment",
    "spectral_alignment_score",
    "spectral_stats",
]

#: Fraction of the anchor spectrum kept (the reference's ``topq`` / ``SAS_Q``).
DEFAULT_TOPQ: float = 0.1
#: The reference's stabiliser, added to ``λ_k s_k`` inside the square root.
DEFAULT_EPS: float = 1e-8
#: The reference's sweep, ``round(i * 0.1, 1)`` for i = 1..10.
DEFAULT_TOPQ_SWEEP: tuple[float, ...] = tuple(round(i * 0.1, 1) for i in range(1, 11))


@dataclass(frozen=True)
class SpectralStats:
    """Everything SAS needs that does not depend on ``topq``; float64 numpy, modes descending.

    ``eigenvalues (d,)`` of the anchor covariance, ``eigenvectors (d, d)`` (columns), ``cov (d,)``
    = ``c_k``, ``var_other (d,)`` = ``s_k``, ``rho (d,)`` = ``ρ_k``, ``eps``, ``n``, and the two
    column means used for centring.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    cov: np.ndarray
    var_other: np.ndarray
    rho: np.ndarray
    eps: float
    n: int
    mean_anchor: np.ndarray
    mean_other: np.ndarray


@dataclass(frozen=True)
class SASResult:
    """One directional SAS: ``score`` plus the per-mode quantities behind it (for plots/reports)."""

    score: float
    topq: float
    eps: float
    threshold: float
    kept: np.ndarray
    eigenvalues: np.ndarray
    rho: np.ndarray
    n: int

    @property
    def n_kept(self) -> int:
        """Number of eigenmodes in the kept set ``M``."""
        return int(self.kept.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-mode arrays as lists)."""
        return {
            "score": self.score,
            "topq": self.topq,
            "eps": self.eps,
            "threshold": self.threshold,
            "n_kept": self.n_kept,
            "n": self.n,
            "eigenvalues": self.eigenvalues.tolist(),
            "rho": self.rho.tolist(),
            "kept": self.kept.tolist(),
        }


def _check_topq(topq: float) -> float:
    if not (0.0 < float(topq) <= 1.0):
        raise AlignmentInputError(f"topq must be in (0, 1], got {topq}")
    return float(topq)


def _check_eps(eps: float) -> float:
    if not (eps >= 0.0 and np.isfinite(eps)):
        raise AlignmentInputError(f"eps must be a finite number ≥ 0, got {eps}")
    return float(eps)


def spectral_stats(
    anchor: Any,
    other: Any,
    *,
    eps: float = DEFAULT_EPS,
    memory_budget: int | None = None,
    names: tuple[str, str] = ("anchor", "other"),
) -> SpectralStats:
    """Eigen-decompose the anchor covariance and correlate both sets mode by mode (see module doc).

    ``anchor``, ``other``: paired ``(n, d)`` arrays in one space. Returns :class:`SpectralStats`.
    A mode whose ``λ_k s_k + ε`` is 0 (only possible with ``eps=0``) gets ``ρ_k = 0``.
    """
    eps = _check_eps(eps)
    x, y = check_paired(anchor, other, same_dim=True, min_n=2, names=names)
    n, d = x.shape
    mom = cross_moments(x, y, want=("xx",), budget=memory_budget)
    assert mom.xx is not None
    lam, vecs = torch.linalg.eigh(mom.xx / n)
    lam, vecs = torch.flip(lam, dims=(0,)), torch.flip(vecs, dims=(1,))
    cov = torch.zeros(d, dtype=torch.float64)
    var = torch.zeros(d, dtype=torch.float64)
    rows = rows_per_block(n, 4 * d, itemsize=8, n_buffers=1, budget=memory_budget)
    for sl in row_slices(n, rows):
        zx = (x[sl].to(torch.float64) - mom.mean_x) @ vecs
        zy = (y[sl].to(torch.float64) - mom.mean_y) @ vecs
        cov += (zx * zy).sum(dim=0)
        var += (zy * zy).sum(dim=0)
    cov /= n
    var /= n
    denom = torch.sqrt(lam * var + eps)
    rho = torch.where(denom > 0, cov / torch.where(denom > 0, denom, 1.0), torch.zeros_like(cov))
    return SpectralStats(
        eigenvalues=lam.numpy(),
        eigenvectors=vecs.numpy(),
        cov=cov.numpy(),
        var_other=var.numpy(),
        rho=rho.numpy(),
        eps=eps,
        n=n,
        mean_anchor=mom.mean_x.numpy(),
        mean_other=mom.mean_y.numpy(),
    )


def _kept_mask(eigenvalues: np.ndarray, topq: float) -> tuple[np.ndarray, float]:
    # numpy's default 'linear' quantile is the rule torch.quantile uses in the reference.
    tau = float(np.quantile(eigenvalues, 1.0 - topq))
    return eigenvalues >= tau, tau


def kept_mode_count(eigenvalues: Sequence[float] | np.ndarray, topq: float) -> int:
    """Number of modes SAS keeps for ``topq`` on this spectrum (``λ_k ≥ quantile_linear(λ, 1−topq)``)."""
    mask, _ = _kept_mask(np.asarray(eigenvalues, dtype=np.float64), _check_topq(topq))
    return int(mask.sum())


def sas_from_stats(stats: SpectralStats, topq: float = DEFAULT_TOPQ) -> SASResult:
    """SAS for ``topq`` from precomputed :class:`SpectralStats` (cheap; used by the sweep)."""
    topq = _check_topq(topq)
    lam = stats.eigenvalues
    kept, tau = _kept_mask(lam, topq)
    weight = lam[kept].sum()
    if not weight > 0:
        raise AlignmentPreconditionError(
            "the anchor has no variance in its kept eigenmodes (all anchor rows identical?): SAS is undefined"
        )
    score = float(np.clip((lam[kept] * np.abs(stats.rho[kept])).sum() / weight, 0.0, 1.0))
    return SASResult(
        score=score,
        topq=topq,
        eps=stats.eps,
        threshold=tau,
        kept=kept,
        eigenvalues=lam,
        rho=stats.rho,
        n=stats.n,
    )


def spectral_alignment(
    anchor: Any,
    other: Any,
    *,
    topq: float = DEFAULT_TOPQ,
    eps: float = DEFAULT_EPS,
    memory_budget: int | None = None,
) -> SASResult:
    """SAS(anchor→other) with its per-mode details; see the module docstring for the formula."""
    _check_topq(topq)
    return sas_from_stats(spectral_stats(anchor, other, eps=eps, memory_budget=memory_budget), topq)


def spectral_alignment_score(
    anchor: Any,
    other: Any,
    topq: float = DEFAULT_TOPQ,
    *,
    eps: float = DEFAULT_EPS,
    memory_budget: int | None = None,
) -> float:
    """SAS(anchor→other) as a float in [0, 1] (the reference's ``spectral_alignment_score``)."""
    return spectral_alignment(anchor, other, topq=topq, eps=eps, memory_budget=memory_budget).score


def sas_directional(
    image: Any,
    text: Any,
    *,
    topq: float = DEFAULT_TOPQ,
    eps: float = DEFAULT_EPS,
    memory_budget: int | None = None,
) -> dict[str, float]:
    """``sas_it`` = SAS(image→text) (image anchor), ``sas_ti`` = SAS(text→image), ``sas_sym`` (mean),
    ``sas_imbalance`` = ``sas_it − sas_ti`` (positive: the image space is more structured)."""
    it = spectral_alignment_score(image, text, topq, eps=eps, memory_budget=memory_budget)
    ti = spectral_alignment_score(text, image, topq, eps=eps, memory_budget=memory_budget)
    return {"sas_it": it, "sas_ti": ti, "sas_sym": 0.5 * (it + ti), "sas_imbalance": it - ti}


def sas_topq_sweep(
    image: Any,
    text: Any,
    topqs: Sequence[float] = DEFAULT_TOPQ_SWEEP,
    *,
    eps: float = DEFAULT_EPS,
    memory_budget: int | None = None,
) -> list[dict[str, float]]:
    """SAS in both directions for each ``topq`` (one eigen-decomposition per direction).

    Returns one row per ``topq``: ``topq``, ``n_kept_it``, ``n_kept_ti``, ``sas_it``, ``sas_ti``,
    ``sas_sym``, ``sas_imbalance``.
    """
    for q in topqs:
        _check_topq(q)
    st_it = spectral_stats(image, text, eps=eps, memory_budget=memory_budget, names=("image", "text"))
    st_ti = spectral_stats(text, image, eps=eps, memory_budget=memory_budget, names=("text", "image"))
    rows: list[dict[str, float]] = []
    for q in topqs:
        it, ti = sas_from_stats(st_it, q), sas_from_stats(st_ti, q)
        rows.append(
            {
                "topq": float(q),
                "n_kept_it": float(it.n_kept),
                "n_kept_ti": float(ti.n_kept),
                "sas_it": it.score,
                "sas_ti": ti.score,
                "sas_sym": 0.5 * (it.score + ti.score),
                "sas_imbalance": it.score - ti.score,
            }
        )
    return rows


def sas_per_record(
    anchor: Any,
    other: Any,
    *,
    topq: float = DEFAULT_TOPQ,
    eps: float = DEFAULT_EPS,
    memory_budget: int | None = None,
) -> np.ndarray:
    """Per-record SAS(anchor→other), float64 ``(n,)``; ``mean == spectral_alignment_score`` (medvl extension).

    ``sas_i = Σ_M w_k sign(ρ_k) Z_x[i,k] Z_y[i,k] / sqrt(λ_k s_k + ε)``, ``w_k = λ_k / Σ_M λ``.
    High values: record ``i`` lies along the anchor's dominant modes in the same direction in both
    modalities; negative values: it works against the population alignment.
    """
    _check_topq(topq)
    stats = spectral_stats(anchor, other, eps=eps, memory_budget=memory_budget)
    res = sas_from_stats(stats, topq)
    x, y = check_paired(anchor, other, same_dim=True, names=("anchor", "other"))
    keep = np.flatnonzero(res.kept)
    lam = stats.eigenvalues[keep]
    denom = np.sqrt(lam * stats.var_other[keep] + stats.eps)
    coef = np.where(denom > 0, (lam / lam.sum()) * np.sign(stats.rho[keep]) / np.where(denom > 0, denom, 1.0), 0.0)
    vecs = torch.from_numpy(np.ascontiguousarray(stats.eigenvectors[:, keep]))
    mx, my = torch.from_numpy(stats.mean_anchor), torch.from_numpy(stats.mean_other)
    coef_t = torch.from_numpy(coef)
    out = np.empty(stats.n, dtype=np.float64)
    rows = rows_per_block(stats.n, 2 * x.shape[1] + 2 * keep.size, itemsize=8, n_buffers=1, budget=memory_budget)
    for sl in row_slices(stats.n, rows):
        zx = (x[sl].to(torch.float64) - mx) @ vecs
        zy = (y[sl].to(torch.float64) - my) @ vecs
        out[sl] = ((zx * zy) @ coef_t).numpy()
    return out
