"""``medvl report SWEEP_DIR``: tables, CSVs, figures and a Markdown report for a finished sweep.

Outputs (all inside the sweep directory):

* ``report.md`` — test results at the best validation epoch (``best``, by the selection metric) and at the
  last epoch (``last``), each as median (Q1–Q3) and mean ± std across folds and seeds, with Δ%
  against the stage-1 baseline paired per fold (as the Balancing Act's Table 2), plus figures;
* ``tables/test_results.csv``, ``tables/trajectories.csv``, ``tables/grad_probe.csv`` — every
  number, long format; ``tables/summary.csv`` — every aggregate;
* ``figures/*.png|svg`` — trajectories per stage, trade-off with Pareto front, gradient ratio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medvl import __version__
from medvl.config.experiment import ExperimentConfig
from medvl.config.loading import config_from_dict, load_yaml
from medvl.experiments.aggregate import (
    final_test_frame,
    format_mean_std,
    format_median_iqr,
    grad_probe_frame,
    load_cell_results,
    relative_change,
    summarise,
    trajectory_frame,
)
from medvl.experiments.grid import expand_cells, format_lambda
from medvl.experiments.plots import plot_grad_ratio, plot_tradeoff, plot_trajectories
from medvl.utils.io import atomic_write_text

__all__ = ["EXPERIMENT_FILE", "ReportFiles", "build_report", "markdown_table"]

EXPERIMENT_FILE = "experiment.yaml"


@dataclass
class ReportFiles:
    """What :func:`build_report` wrote."""

    report: Path
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def _stage_label(stage: str, lam: float) -> str:
    return stage if math.isnan(lam) else f"{stage} λ={format_lambda(lam)}"


def _results_table(
    summary: pd.DataFrame,
    deltas: pd.DataFrame,
    metrics: Sequence[str],
    delta_metric: str,
    checkpoint: str,
    style: str,
) -> str:
    rows = []
    sub = summary[summary["checkpoint"] == checkpoint]
    keys = sub[["stage", "lambda"]].drop_duplicates().itertuples(index=False)
    for stage, lam in keys:
        row = [_stage_label(stage, lam)]
        n = 0
        for metric in metrics:
            cell = sub[(sub["stage"] == stage) & (sub["metric"] == metric) & _lam_eq(sub["lambda"], lam)]
            if cell.empty:
                row.append("–")
                continue
            rec = cell.iloc[0]
            n = max(n, int(rec["n"]))
            if style == "median":
                row.append(format_median_iqr(rec["median"], rec["q1"], rec["q3"]))
            else:
                row.append(format_mean_std(rec["mean"], rec["std"]))
        delta = deltas[(deltas["checkpoint"] == checkpoint) & (deltas["stage"] == stage)
                       & (deltas["metric"] == delta_metric) & _lam_eq(deltas["lambda"], lam)]
        if delta.empty:
            row.append("–")
        else:
            rec = delta.iloc[0]
            if style == "median":
                row.append("–" if math.isnan(rec["median"]) else f"{rec['median']:+.1f}")
            else:
                row.append(format_mean_std(rec["mean"], rec["std"], digits=1))
        row.append(str(n))
        rows.append(row)
    headers = ["run", *metrics, f"Δ% {delta_metric}", "n"]
    return markdown_table(headers, rows)


def _lam_eq(column: pd.Series, lam: float) -> pd.Series:
    return column.isna() if math.isnan(lam) else column == lam


def _selection_text(cfg: ExperimentConfig) -> str:
    """How ``best`` was chosen, e.g. "the epoch of best validation `val/caption` (min)", per stage where stages differ."""
    chosen = {stage.name: stage.selection or cfg.selection for stage in cfg.stages}
    if len({(s.metric, s.mode) for s in chosen.values()}) == 1:
        first = next(iter(chosen.values()))
        return f"the epoch of best validation `{first.metric}` ({first.mode})"
    per_stage = ", ".join(f"{name} `{s.metric}` ({s.mode})" for name, s in chosen.items())
    return f"the epoch of best validation metric of each stage: {per_stage}"


def _reading(summary: pd.DataFrame, deltas: pd.DataFrame, cfg: ExperimentConfig) -> list[str]:
    """A plain-words reading of the trade-off at the ``best`` checkpoint."""
    tuned = [s.name for s in cfg.stages if s.over_lambda]
    if not tuned:
        return []
    stage = tuned[-1]
    best = summary[(summary["checkpoint"] == "best") & (summary["stage"] == stage)]
    d = deltas[(deltas["checkpoint"] == "best") & (deltas["stage"] == stage)
               & (deltas["metric"] == cfg.classification_metric)].set_index("lambda")
    ret = best[best["metric"] == cfg.retrieval_metric].set_index("lambda")
    lines = []
    if 1.0 in d.index and not math.isnan(d.loc[1.0, "median"]):
        lines.append(f"- λ = 1.0 (contrastive only) changes {cfg.classification_metric} by "
                     f"{d.loc[1.0, 'median']:+.1f} % (median over folds) relative to the stage-1 classifier.")
    below = [lam for lam in ret.index if not math.isnan(lam) and lam < 1.0]
    if below:
        top = max(below, key=lambda lam: ret.loc[lam, "median"])
        text = (f"- Among λ < 1, λ = {format_lambda(top)} reaches the highest {cfg.retrieval_metric} "
                f"({ret.loc[top, 'median']:.3f}")
        if 1.0 in ret.index:
            text += f" vs {ret.loc[1.0, 'median']:.3f} at λ = 1.0"
        text += ")"
        if top in d.index and not math.isnan(d.loc[top, "median"]):
            text += f" with a {d.loc[top, 'median']:+.1f} % change in {cfg.classification_metric}"
        lines.append(text + ".")
    return lines


def load_experiment_config(sweep_dir: str | os.PathLike[str]) -> ExperimentConfig:
    """The resolved experiment config a sweep saved in its directory."""
    path = Path(sweep_dir) / EXPERIMENT_FILE
    return config_from_dict(load_yaml(path), ExperimentConfig, str(path))


def build_report(sweep_dir: str | os.PathLike[str], config: ExperimentConfig | None = None) -> ReportFiles:
    """Aggregate every finished cell of ``sweep_dir`` and write tables, figures and ``report.md``."""
    root = Path(sweep_dir)
    cfg = config if config is not None else load_experiment_config(root)
    results = load_cell_results(root)
    if not results:
        raise FileNotFoundError(f"{root}: no finished cells (no cell_results.json) to report")
    traj = trajectory_frame(results)
    test = final_test_frame(results)
    grads = grad_probe_frame(results)
    baseline_stage = cfg.baseline.stage or cfg.stages[0].name
    test = relative_change(test, baseline_stage, cfg.baseline.checkpoint)

    available = set(test["metric"])
    for key, metric in (("classification_metric", cfg.classification_metric),
                        ("retrieval_metric", cfg.retrieval_metric)):
        if metric not in available:
            names = ", ".join(sorted(available)) or "none"
            raise ValueError(f"{key}={metric!r} is not among the cells' test metrics: {names}")
    missing = [m for m in cfg.report_metrics if m not in available]
    if missing:
        raise ValueError(f"report_metrics {missing} are not among the cells' test metrics")
    summary = summarise(test, by=["stage", "lambda", "checkpoint", "metric"])
    deltas = summarise(test.rename(columns={"value": "raw"}).rename(columns={"delta_pct": "value"}),
                       by=["stage", "lambda", "checkpoint", "metric"])
    files = ReportFiles(report=root / "report.md")
    tables = root / "tables"
    files.tables += [
        _write_csv(test, tables / "test_results.csv"),
        _write_csv(traj, tables / "trajectories.csv"),
        _write_csv(grads, tables / "grad_probe.csv"),
        _write_csv(summary.assign(kind="value"), tables / "summary.csv"),
        _write_csv(deltas.assign(kind="delta_pct"), tables / "summary_delta_pct.csv"),
    ]

    figures = root / "figures"
    axis_metrics = [cfg.classification_metric, cfg.retrieval_metric, *cfg.report_metrics]
    val_metrics = [f"val/{m}" for m in axis_metrics]
    sections: list[str] = []
    for stage in [s.name for s in cfg.stages if s.over_lambda]:
        if (traj["stage"] == stage).any() and set(val_metrics) & set(traj["metric"]):
            paths = plot_trajectories(traj, val_metrics, figures / f"trajectories_{stage}", stage=stage,
                                      title=f"{stage}: validation metrics per epoch (median, IQR)")
            files.figures += paths
            sections.append(f"### Validation trajectories ({stage})\n\n![trajectories]({paths[0].relative_to(root)})")
        best = summary[(summary["stage"] == stage) & (summary["checkpoint"] == "best")]
        if {cfg.classification_metric, cfg.retrieval_metric} <= set(best["metric"]):
            base = summary[(summary["stage"] == baseline_stage) & (summary["checkpoint"] == cfg.baseline.checkpoint)
                           & (summary["metric"] == cfg.classification_metric)]
            baseline_y = float(base["median"].iloc[0]) if len(base) else None
            paths = plot_tradeoff(best, cfg.retrieval_metric, cfg.classification_metric,
                                  figures / f"tradeoff_{stage}", baseline_y=baseline_y,
                                  title=f"{stage}: test trade-off at the best validation epoch")
            files.figures += paths
            sections.append(f"### Trade-off ({stage})\n\n![trade-off]({paths[0].relative_to(root)})")
        ratio_names = sorted(q for q in grads["quantity"].unique() if str(q).startswith("ratio"))
        if ratio_names and (grads["stage"] == stage).any():
            paths = plot_grad_ratio(grads, ratio_names[0], figures / f"grad_ratio_{stage}", stage=stage)
            files.figures += paths
            sections.append(f"### Gradient-norm ratio ({stage})\n\n![gradient ratio]({paths[0].relative_to(root)})")

    n_cells = len(expand_cells(cfg))
    folds = ", ".join(str(f) for f in cfg.grid.folds)
    seeds = ", ".join(str(s) for s in cfg.grid.seeds)
    parts = [
        f"# {cfg.name}: sweep report",
        "",
        f"medvl {__version__} · {len(results)} of {n_cells} cells finished · folds {folds} · seeds {seeds}",
        "",
        f"Test results are aggregated across folds and seeds. `best` = {_selection_text(cfg)}; "
        "`last` = the final epoch. Δ% is computed per fold and "
        f"seed against the `{baseline_stage}` stage ({cfg.baseline.checkpoint} checkpoint) and then aggregated. "
        "Quantiles: linear interpolation (NumPy default).",
        "",
    ]
    reading = _reading(summary, deltas, cfg)
    if reading:
        parts += ["## Reading", "", *reading, ""]
    for checkpoint, heading in (("best", "at the best validation epoch"), ("last", "at the last epoch")):
        if not (summary["checkpoint"] == checkpoint).any():
            continue
        parts += [
            f"## Test results {heading} — median (Q1–Q3)",
            "",
            _results_table(summary, deltas, axis_metrics, cfg.classification_metric, checkpoint, "median"),
            "",
            f"## Test results {heading} — mean ± std",
            "",
            _results_table(summary, deltas, axis_metrics, cfg.classification_metric, checkpoint, "mean"),
            "",
        ]
    if sections:
        parts += ["## Figures", "", *[s + "\n" for s in sections]]
    parts += ["## Files", "", *[f"- `{p.relative_to(root)}`" for p in files.tables], ""]
    atomic_write_text(files.report, "\n".join(parts))
    return files
