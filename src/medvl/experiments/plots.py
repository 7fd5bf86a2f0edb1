"""Sweep figures (matplotlib, Agg backend; each written as PNG and SVG).

* :func:`plot_trajectories` — validation metrics vs epoch, one line per λ (median over folds
  and seeds) with the interquartile range shaded, as the Balancing Act's Figures 2–4.
* :func:`plot_tradeoff` — classification vs retrieval per λ (median with IQR whiskers), the
  Pareto front, and the baseline classifier as a reference line.
* :func:`plot_grad_ratio` — ratio of the two objectives' gradient norms over training.

Axis labels, titles and legends use :func:`medvl.evaluation.display.metric_label` (readable
names, never internal keys such as ``ratio/bce/clip``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from medvl.evaluation.display import metric_label
from medvl.experiments.aggregate import pareto_front, summarise
from medvl.experiments.grid import format_lambda

__all__ = ["plot_grad_ratio", "plot_tradeoff", "plot_trajectories", "save_figure"]


def save_figure(fig: Figure, out_base: str | os.PathLike[str]) -> list[Path]:
    """Write ``out_base.png`` (150 dpi) and ``out_base.svg``; close the figure."""
    base = Path(out_base)
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, dpi in ((".png", 150), (".svg", 72)):
        path = base.with_suffix(suffix)
        tmp = path.with_name(f".{path.name}.tmp{suffix}")
        fig.savefig(tmp, bbox_inches="tight", dpi=dpi)
        os.replace(tmp, path)
        paths.append(path)
    plt.close(fig)
    return paths


def _lambda_label(value: float) -> str:
    return "λ = –" if math.isnan(value) else f"λ = {format_lambda(value)}"


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = plt.get_cmap("viridis")  # the pale top end is skipped: it vanishes on white
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def plot_trajectories(
    trajectories: pd.DataFrame,
    metrics: Sequence[str],
    out_base: str | os.PathLike[str],
    stage: str | None = None,
    title: str | None = None,
) -> list[Path]:
    """Median ± IQR of each metric per epoch, one line per λ. ``trajectories`` is a trajectory frame."""
    frame = trajectories if stage is None else trajectories[trajectories["stage"] == stage]
    metrics = [m for m in metrics if m in set(frame["metric"])]
    if not metrics:
        raise ValueError("none of the requested metrics is in the trajectories")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    lambdas = sorted(frame["lambda"].unique(), key=lambda v: (math.isnan(v), v))
    colors = _colors(len(lambdas))
    for ax, metric in zip(axes[0], metrics, strict=True):
        sub = frame[frame["metric"] == metric]
        stats = summarise(sub, by=["lambda", "epoch"])
        for color, lam in zip(colors, lambdas, strict=True):
            rows = stats[(stats["lambda"] == lam) | (stats["lambda"].isna() & math.isnan(lam))]
            rows = rows.sort_values("epoch")
            if rows.empty:
                continue
            ax.plot(rows["epoch"], rows["median"], color=color, label=_lambda_label(lam), marker="o", ms=3)
            ax.fill_between(rows["epoch"], rows["q1"], rows["q3"], color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("epoch (0 = before training)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if title:
        fig.suptitle(title)
    # one legend for all panels, right of them, so it never covers a curve
    fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    return save_figure(fig, out_base)


def plot_tradeoff(
    summary: pd.DataFrame,
    x_metric: str,
    y_metric: str,
    out_base: str | os.PathLike[str],
    baseline_y: float | None = None,
    title: str | None = None,
) -> list[Path]:
    """Classification (y) against retrieval (x): one point per λ with IQR whiskers, Pareto front.

    ``summary`` is :func:`~medvl.experiments.aggregate.summarise` output grouped by
    ``["lambda", "metric"]`` (one checkpoint, one stage).
    """
    xs = summary[summary["metric"] == x_metric].set_index("lambda")
    ys = summary[summary["metric"] == y_metric].set_index("lambda")
    lambdas = sorted(set(xs.index) & set(ys.index))
    if not lambdas:
        raise ValueError(f"no λ has both {x_metric!r} and {y_metric!r}")
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    colors = _colors(len(lambdas))
    points = np.array([[xs.loc[lam, "median"], ys.loc[lam, "median"]] for lam in lambdas], dtype=float)
    for color, lam, (x, y) in zip(colors, lambdas, points, strict=True):
        xerr = [[x - xs.loc[lam, "q1"]], [xs.loc[lam, "q3"] - x]]
        yerr = [[y - ys.loc[lam, "q1"]], [ys.loc[lam, "q3"] - y]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3, label=_lambda_label(lam))
    front = pareto_front(points)
    if front.any():
        # ring every Pareto-optimal λ (visible even when one λ dominates all the others) and join them
        ax.scatter(points[front, 0], points[front, 1], s=180, facecolors="none", edgecolors="grey", linewidths=1.2,
                   label=f"Pareto-optimal ({int(front.sum())} of {len(lambdas)})", zorder=4)
        if front.sum() > 1:
            order = np.argsort(points[front, 0])
            ax.plot(points[front, 0][order], points[front, 1][order], "--", color="grey", lw=1)
    if baseline_y is not None and not math.isnan(baseline_y):
        ax.axhline(baseline_y, color="black", linestyle=":", label="stage-1 classifier")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # tick labels of 4-decimal rates must not touch
    ax.set_xlabel(metric_label(x_metric) + " (median, IQR whiskers)")
    ax.set_ylabel(metric_label(y_metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, out_base)


def plot_grad_ratio(
    grad_probe: pd.DataFrame,
    quantity: str,
    out_base: str | os.PathLike[str],
    stage: str | None = None,
    title: str | None = None,
) -> list[Path]:
    """Median ± IQR over folds/seeds of one gradient-probe ``quantity`` against step (log scale).

    The title names the ratio in words (``‖∇L_bce‖ / ‖∇L_clip‖``: how much larger the first term's
    gradient on the shared parameters is than the second's); a dotted line marks 1 (equal scale).
    """
    frame = grad_probe[grad_probe["quantity"] == quantity]
    if stage is not None:
        frame = frame[frame["stage"] == stage]
    if frame.empty:
        raise ValueError(f"no gradient-probe records of {quantity!r}")
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    lambdas = sorted(frame["lambda"].unique(), key=lambda v: (math.isnan(v), v))
    for color, lam in zip(_colors(len(lambdas)), lambdas, strict=True):
        sub = frame[(frame["lambda"] == lam) | (frame["lambda"].isna() & math.isnan(lam))]
        stats = summarise(sub, by=["step"]).sort_values("step")
        ax.plot(stats["step"], stats["median"], color=color, label=_lambda_label(lam))
        ax.fill_between(stats["step"], stats["q1"], stats["q3"], color=color, alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    if quantity.startswith("ratio/"):
        ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric_label(quantity))
    default = (f"Gradient-norm ratio {metric_label(quantity)} on the shared parameters"
               + (f" ({stage})" if stage else "") + "\nmedian and IQR over folds and seeds; 1 = equal scale")
    ax.set_title(title or default, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_base)
