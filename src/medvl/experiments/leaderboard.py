"""The merged leaderboard of a benchmark: every results JSON → CSV, Markdown and a heatmap.

Files written into the benchmark directory:

* ``benchmark.csv`` — one row per run, as CLIP_benchmark's ``build`` writes it: the run's
  metrics flattened into columns plus ``dataset, model, pretrained, task, language,
  model_fullname`` (and medvl's ``medvl_task``, ``skipped``);
* ``leaderboard.csv`` / ``leaderboard.md`` — one row per model, one column per (dataset, task)
  holding that run's *headline* metric (:data:`HEADLINES`), then the mean over the columns the
  model has and its mean rank (rank 1 = best in a column, ties share the average rank, as
  CLIP_benchmark's "average rank" plot);
* ``leaderboard.png`` — the headline table as a heatmap (models × dataset/task).
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medvl.utils.io import atomic_write_text, read_json

__all__ = ["HEADLINES", "headline_metric", "load_results", "write_leaderboard"]

#: medvl task → (description, metric-name patterns tried in order; the mean over all matches of the first
#: pattern that matches is the headline). Higher is better for every one of them.
HEADLINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "retrieval": ("mean of image→text and text→image Recall@5", (r"^(i2t|t2i)/recall@5$", r"^(i2t|t2i)/recall@\d+$")),
    "zeroshot": ("ACA (balanced accuracy) over all classes; mAP for multi-label tasks",
                 (r"/all/balanced_accuracy$", r"/all/map_macro$", r"/(base|novel)/balanced_accuracy$",
                  r"/(base|novel)/map_macro$")),
    "probe": ("balanced accuracy of the largest K (all shots when run); mAP for multi-label tasks",
              (r"(^|/)allshot/balanced_accuracy$", r"(^|/)allshot/map_macro$", r"(^|/)\d+shot/balanced_accuracy$",
               r"(^|/)\d+shot/map_macro$")),
    "classification": ("balanced accuracy of the heads; mAP for multi-label heads; κ for ordinal heads",
                       (r"/balanced_accuracy$", r"/map_macro$", r"/kappa$")),
}


def headline_metric(task: str, metrics: dict[str, Any]) -> float | None:
    """The headline value of one run (see :data:`HEADLINES`), None when no metric matches."""
    patterns = HEADLINES.get(task, ("", ()))[1]
    finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
    for pattern in patterns:
        matched = [v for k, v in finite.items() if re.search(pattern, k)]
        if r"\d+shot" in pattern and matched:  # only the largest K (probe names: [<task>/]<K>shot/<metric>)
            shots = {k: int(m.group(1)) for k in finite if re.search(pattern, k) and (m := re.search(r"(\d+)shot/", k))}
            largest = max(shots.values())
            matched = [finite[k] for k, n in shots.items() if n == largest]
        if matched:
            return float(np.mean(matched))
    return None


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every results JSON under ``<out_dir>/results`` (sorted by file name)."""
    folder = Path(out_dir) / "results"
    return [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _flat_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for data in results:
        row: dict[str, Any] = dict(data.get("metrics") or {})
        row.update(data.get("clip_benchmark_metrics") or {})
        for key in ("dataset", "model", "pretrained", "task", "language"):
            row[key] = data.get(key)
        row["model_fullname"] = f"{data.get('model')} {data.get('pretrained')}"
        medvl = data.get("medvl") or {}
        row["medvl_task"] = medvl.get("task")
        row["skipped"] = medvl.get("skipped") or ""
        rows.append(row)
    return rows


def _csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n", float_format="%.10g")
    return buffer.getvalue()


def _markdown(table: pd.DataFrame, digits: int = 4) -> str:
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" if c == "model" else "---:" for c in columns) + "|"]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            if isinstance(value, float):
                cells.append("" if not math.isfinite(value) else f"{value:.{digits}f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _heatmap(table: pd.DataFrame, columns: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = table[columns].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(columns) + 2), max(2.0, 0.5 * len(table) + 1.5)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(columns)), labels=columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(table)), labels=list(table["model"]), fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if math.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] < 0.5 else "black")
    fig.colorbar(image, ax=ax, label="headline metric")
    ax.set_title("medvl benchmark: headline metric per dataset / task")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    from medvl.utils.io import atomic_write_bytes

    atomic_write_bytes(path, buffer.getvalue())


def write_leaderboard(out_dir: str | Path) -> dict[str, Path]:
    """Write ``benchmark.csv``, ``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard.png``; returns their paths."""
    out = Path(out_dir)
    results = load_results(out)
    paths: dict[str, Path] = {}
    if not results:
        return paths
    flat = pd.DataFrame(_flat_rows(results))
    first = ["dataset", "model", "pretrained", "task", "medvl_task", "language", "model_fullname", "skipped"]
    flat = flat[first + sorted(c for c in flat.columns if c not in first)]
    atomic_write_text(out / "benchmark.csv", _csv(flat))
    paths["benchmark_csv"] = out / "benchmark.csv"

    cells: dict[tuple[str, str], float | None] = {}
    models: list[str] = []
    for data in results:
        medvl = data.get("medvl") or {}
        model, column = str(data.get("model")), f"{data.get('dataset')}/{medvl.get('task')}"
        models.append(model)
        cells[(model, column)] = None if medvl.get("skipped") else headline_metric(str(medvl.get("task")), data.get("metrics") or {})
    columns = sorted({c for _, c in cells})
    models = sorted(set(models))
    table = pd.DataFrame([{"model": m, **{c: cells.get((m, c)) for c in columns}} for m in models])
    table[columns] = table[columns].astype(float)
    ranks = table[columns].rank(ascending=False, method="average")
    table["mean"] = table[columns].mean(axis=1, skipna=True)
    table["mean_rank"] = ranks.mean(axis=1, skipna=True)
    table["n_runs"] = table[columns].notna().sum(axis=1)
    table = table.sort_values(["mean_rank", "model"], na_position="last").reset_index(drop=True)
    atomic_write_text(out / "leaderboard.csv", _csv(table))
    legend = "\n".join(f"- `{task}`: {description}" for task, (description, _) in HEADLINES.items())
    skips = sorted(f"- {data.get('dataset')}/{(data.get('medvl') or {}).get('task')} × {data.get('model')}: "
                   f"{(data.get('medvl') or {}).get('skipped')}" for data in results if (data.get("medvl") or {}).get("skipped"))
    skipped_section = f"\nSkipped runs ({len(skips)}):\n\n" + "\n".join(skips) + "\n" if skips else ""
    atomic_write_text(out / "leaderboard.md",
                      "# Benchmark leaderboard\n\nHeadline metric per dataset/task (higher is better), the mean over "
                      "the model's columns and its mean rank (1 = best; ties share the average rank). Empty: the run "
                      "was skipped or failed (see benchmark.csv).\n\n" + _markdown(table) + "\nHeadline metrics:\n\n"
                      + legend + "\n" + skipped_section)
    paths.update(leaderboard_csv=out / "leaderboard.csv", leaderboard_md=out / "leaderboard.md")
    if columns:
        _heatmap(table, columns, out / "leaderboard.png")
        paths["heatmap"] = out / "leaderboard.png"
    return paths
