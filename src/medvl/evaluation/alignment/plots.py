"""Figures for alignment diagnostics (matplotlib, Agg backend, PNG; written atomically).

* :func:`plot_eigen_spectrum` — the anchor's eigenvalues (log scale) with SAS's kept modes marked
  and the ``topq`` threshold τ;
* :func:`plot_mode_correlations` — per-mode ``|ρ_k|`` bars, kept modes highlighted;
* :func:`plot_metric_vs_target` — one metric against a retrieval target over study entries,
  coloured by domain, titled with Spearman ρ and p.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvl.evaluation.alignment.sas import SASResult
from medvl.utils.io import atomic_write_bytes

__all__ = ["plot_eigen_spectrum", "plot_metric_vs_target", "plot_mode_correlations"]

_KEPT, _DROPPED = "#1f77b4", "#bbbbbb"
_DOMAIN_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


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
    """Eigenvalues of each anchor (``{"image anchor (I→T)": res, …}``) with kept modes filled."""
    plt, fig, ax = _figure()
    for i, (label, res) in enumerate(results.items()):
        lam = np.clip(res.eigenvalues, np.finfo(np.float64).tiny, None)
        k = np.arange(1, lam.size + 1)
        colour = _DOMAIN_COLOURS[i % len(_DOMAIN_COLOURS)]
        ax.plot(k, lam, color=colour, lw=1.2, label=f"{label}: {res.n_kept}/{lam.size} modes kept (topq={res.topq})")
        ax.scatter(k[res.kept], lam[res.kept], color=colour, s=10, zorder=3)
        ax.axhline(max(res.threshold, np.finfo(np.float64).tiny), color=colour, ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("eigenmode k (descending λ)")
    ax.set_ylabel("anchor eigenvalue λ_k")
    ax.set_title(title or "Anchor eigen-spectrum (dots: modes SAS keeps; dotted: τ)")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_mode_correlations(res: SASResult, path: str | os.PathLike[str], title: str = "",
                           max_modes: int | None = None) -> Path:
    """Bars of ``|ρ_k|`` per eigenmode (kept modes coloured), with the SAS score in the title."""
    plt, fig, ax = _figure()
    rho = np.abs(res.rho)
    m = rho.size if max_modes is None else min(rho.size, max_modes)
    k = np.arange(1, m + 1)
    colours = [_KEPT if kept else _DROPPED for kept in res.kept[:m]]
    ax.bar(k, rho[:m], color=colours, width=1.0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("eigenmode k of the anchor (descending λ)")
    ax.set_ylabel("|ρ_k|")
    ax.set_title(title or f"Per-mode |ρ| (SAS = {res.score:.4f}, {res.n_kept} kept)")
    return _save(plt, fig, path)


def plot_metric_vs_target(
    metric: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    domains: Sequence[str | None],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    *,
    metric_name: str = "SAS",
    target_name: str = "rSum",
) -> Path:
    """Scatter of ``metric`` vs ``target`` per entry, coloured by domain, with Spearman ρ in the title."""
    from scipy import stats

    x, y = np.asarray(metric, dtype=np.float64), np.asarray(target, dtype=np.float64)
    plt, fig, ax = _figure(5.5, 4.2)
    names = sorted({str(d) for d in domains})
    for i, dom in enumerate(names):
        sel = np.array([str(d) == dom for d in domains])
        ax.scatter(x[sel], y[sel], s=22, color=_DOMAIN_COLOURS[i % len(_DOMAIN_COLOURS)], label=dom)
    for xi, yi, lab in zip(x, y, labels, strict=True):
        if np.isfinite(xi) and np.isfinite(yi):
            ax.annotate(lab, (xi, yi), fontsize=5, alpha=0.7, xytext=(2, 2), textcoords="offset points")
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
        res = stats.spearmanr(x[ok], y[ok])
        subtitle = f"Spearman ρ = {res.statistic:.3f} (p = {res.pvalue:.2g}, n = {int(ok.sum())})"
    else:
        subtitle = f"Spearman ρ undefined (n = {int(ok.sum())})"
    ax.set_xlabel(metric_name)
    ax.set_ylabel(target_name)
    ax.set_title(f"{metric_name} vs {target_name}\n{subtitle}", fontsize=9)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)
