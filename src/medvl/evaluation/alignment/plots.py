"""Figures for alignment diagnostics (matplotlib, Agg backend, PNG; written atomically).

* :func:`plot_eigen_spectrum` — the anchor's eigenvalues (log scale) with SAS's kept modes marked
  and the ``topq`` threshold τ, drawn up to the numerical rank (a rank-deficient anchor — fewer
  records than dimensions — is said so in the figure and warned about);
* :func:`plot_mode_correlations` — per-mode ``|ρ_k|`` bars, kept modes highlighted;
* :func:`plot_metric_vs_target` — one metric against a retrieval target over study entries,
  coloured by domain, points labelled without overlap (adjustText), titled with Spearman ρ, its
  p-value (exact permutation for small n, :func:`~medvl.evaluation.alignment.correlation.correlate`)
  and n.

Titles and axis labels use :func:`medvl.evaluation.display.metric_label`, never internal keys.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvl.evaluation.alignment.sas import SASResult
from medvl.evaluation.display import metric_label
from medvl.utils.io import atomic_write_bytes

__all__ = ["RankDeficiencyWarning", "numerical_rank", "plot_eigen_spectrum", "plot_metric_vs_target",
           "plot_mode_correlations"]

_KEPT, _DROPPED = "#1f77b4", "#bbbbbb"
_DOMAIN_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_MARKERS = ("o", "s", "^", "D")


class RankDeficiencyWarning(UserWarning):
    """An anchor covariance has fewer non-zero eigenvalues than dimensions (n ≤ d)."""


def numerical_rank(eigenvalues: np.ndarray, n: int | None = None) -> int:
    """Number of eigenvalues above ``λ_max · max(n, d) · ε_float64`` (numpy's ``matrix_rank`` rule)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.size == 0 or not np.isfinite(lam).any() or lam.max() <= 0:
        return 0
    tol = lam.max() * max(lam.size, n or 0) * np.finfo(np.float64).eps
    return int((lam > tol).sum())


def _figure(width: float = 6.0, height: float = 3.6) -> tuple[Any, Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _save(plt: Any, fig: Any, path: str | os.PathLike[str]) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_eigen_spectrum(results: dict[str, SASResult], path: str | os.PathLike[str], title: str = "") -> Path:
    """Eigenvalues of each anchor (``{"image anchor (I→T)": res, …}``) with kept modes filled.

    Only modes up to each anchor's numerical rank are drawn: beyond it the eigenvalues are
    round-off (≈1e-17 … 1e-300) and would flatten the informative part of a log axis. When an anchor
    is rank-deficient (n ≤ d: centred data has rank ≤ n − 1) the figure says so and a
    :class:`RankDeficiencyWarning` is issued — SAS then only sees ``rank`` directions.
    """
    plt, fig, ax = _figure(6.4, 3.8)
    notes = []
    for i, (label, res) in enumerate(results.items()):
        lam_all = np.asarray(res.eigenvalues, dtype=np.float64)
        rank = max(1, numerical_rank(lam_all, res.n))
        lam = lam_all[:rank]
        k = np.arange(1, rank + 1)
        kept = np.asarray(res.kept[:rank], dtype=bool)
        colour = _DOMAIN_COLOURS[i % len(_DOMAIN_COLOURS)]
        marker = _MARKERS[i % len(_MARKERS)]
        ax.plot(k, lam, color=colour, lw=1.3, ls="-" if i == 0 else "--",
                label=f"{label}: {res.n_kept} of {lam_all.size} modes kept (topq = {res.topq:g})")
        ax.scatter(k[kept], lam[kept], color=colour, s=14, marker=marker, zorder=3)
        if res.threshold > 0:
            ax.axhline(res.threshold, color=colour, ls=":", lw=0.8)
        if rank < lam_all.size:
            notes.append(str(rank))
            warnings.warn(f"{title or 'alignment'}: {label} covariance is rank-deficient (rank {rank} < d = "
                          f"{lam_all.size} with n = {res.n}); SAS sees only {rank} directions and the spectrum "
                          "plot stops at the rank", RankDeficiencyWarning, stacklevel=2)
    from matplotlib.ticker import MaxNLocator

    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("eigenmode k (largest eigenvalue first)")
    ax.set_ylabel("anchor eigenvalue λ_k")
    lines = [title or "Anchor eigen-spectrum", "markers: modes SAS keeps; dotted lines: its threshold τ"]
    if notes:
        first = next(iter(results.values()))
        lines.append(f"rank-deficient: n = {first.n}, d = {first.eigenvalues.size}, rank {' / '.join(notes)}; "
                     "null modes not drawn")
    ax.set_title("\n".join(lines), fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return _save(plt, fig, path)


def plot_mode_correlations(res: SASResult, path: str | os.PathLike[str], title: str = "",
                           max_modes: int | None = None) -> Path:
    """Bars of ``|ρ_k|`` per eigenmode (kept modes coloured) up to the anchor's numerical rank,
    with the SAS score in the title."""
    plt, fig, ax = _figure()
    rho = np.abs(res.rho)
    rank = max(1, numerical_rank(res.eigenvalues, res.n))
    m = min(rho.size, rank) if max_modes is None else min(rho.size, rank, max_modes)
    k = np.arange(1, m + 1)
    colours = [_KEPT if kept else _DROPPED for kept in res.kept[:m]]
    ax.bar(k, rho[:m], color=colours, width=0.9)
    from matplotlib.ticker import MaxNLocator

    ax.set_ylim(0, 1)
    ax.set_xlim(0.3, m + 0.7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("eigenmode k of the anchor (largest eigenvalue first)")
    ax.set_ylabel("|ρ_k| (correlation of the paired scores)")
    shown = f"{m} modes shown" + (f" (numerical rank {rank} of d = {rho.size})" if rank < rho.size else "")
    ax.set_title((title or f"Per-mode |ρ| (SAS = {res.score:.4f})") + f"\nblue: the {res.n_kept} modes SAS keeps; "
                 + shown, fontsize=9)
    return _save(plt, fig, path)


def _place_labels(ax: Any, x: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> list[Any]:
    """Label each point; adjustText moves the labels apart (and off the points), with leader lines."""
    from adjustText import adjust_text

    texts = [ax.text(xi, yi, lab, fontsize=7) for xi, yi, lab in zip(x, y, labels, strict=True)]
    if texts:
        adjust_text(texts, x=x, y=y, ax=ax, expand=(1.3, 1.6), force_text=(0.4, 0.6),
                    arrowprops={"arrowstyle": "-", "color": "#888888", "lw": 0.5})
    return texts


def plot_metric_vs_target(
    metric: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    domains: Sequence[str | None],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    *,
    metric_name: str = "sas_sym",
    target_name: str = "rsum",
) -> Path:
    """Scatter of ``metric`` vs ``target`` per entry, coloured by domain, labels placed without
    overlap, titled with Spearman ρ, its p-value and n (stars only where the test can reach p < .05)."""
    from medvl.evaluation.alignment.correlation import correlate

    x, y = np.asarray(metric, dtype=np.float64), np.asarray(target, dtype=np.float64)
    plt, fig, ax = _figure(6.4, 5.0)
    names = sorted({str(d) for d in domains})
    for i, dom in enumerate(names):
        sel = np.array([str(d) == dom for d in domains])
        ax.scatter(x[sel], y[sel], s=26, color=_DOMAIN_COLOURS[i % len(_DOMAIN_COLOURS)],
                   marker=_MARKERS[i % len(_MARKERS)], label=dom, zorder=3)
    ok = np.isfinite(x) & np.isfinite(y)
    _place_labels(ax, x[ok], y[ok], [lab for lab, keep in zip(labels, ok, strict=True) if keep])
    res = correlate(x, y, "spearman", n_resamples=0)
    if np.isfinite(res.r):
        subtitle = f"Spearman ρ = {res.r:+.3f}, {res.p_method} p = {res.p:.2g}, n = {res.n}"
    else:
        subtitle = f"Spearman ρ undefined (n = {res.n})"
    ax.set_xlabel(metric_label(metric_name))
    ax.set_ylabel(metric_label(target_name))
    ax.set_title(f"{metric_label(metric_name)} vs {metric_label(target_name)}\n{subtitle}", fontsize=9)
    ax.legend(fontsize=7, title="domain", title_fontsize=7)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)
