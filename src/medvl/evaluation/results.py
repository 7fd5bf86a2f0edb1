"""Result files of an evaluation: ``results.json``, ``metrics.csv`` and a Markdown table.

``results.json``::

    {"provenance": {medvl_version, created, model, manifest, manifest_hash, split, seeds,
                    config, skipped, …},
     "tasks": {"retrieval": {"metrics": {...}, "summaries": {...}?, "options": {...}, "info": {...}},
               ...}}

``metrics.csv``: one row per metric — ``task, metric, clip_benchmark_name, value, std, median,
q1, q3, n`` (the last five only for metrics aggregated over seeds) plus ``model, manifest_hash,
split``. ``clip_benchmark_name`` is the name LAION's CLIP_benchmark gives the same quantity
(``image_retrieval_recall@5`` = text→image Recall@5, …; empty when it has none), so tables of
both tools can be joined. Every value is a fraction in [0, 1] where the metric is a rate
(Recall@K, accuracy, AUROC, AP), never a percentage. Non-finite values are written as empty
cells / JSON null.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medvl.utils.io import atomic_write_json, atomic_write_text

__all__ = ["RESULT_COLUMNS", "clip_benchmark_name", "markdown_table", "metric_rows", "notes_markdown", "write_results"]

RESULT_COLUMNS = ("task", "metric", "clip_benchmark_name", "value", "std", "median", "q1", "q3", "n", "model",
                  "manifest_hash", "split")

#: medvl's last name component → CLIP_benchmark's (zero-shot classification; linear probe adds ``lp_``).
#: CLIP_benchmark: ``metrics/zeroshot_retrieval.py`` (``image_retrieval_recall@k`` = a text query
#: finds its image, ``text_retrieval_recall@k`` = an image query finds a caption, fractions),
#: ``metrics/zeroshot_classification.py`` (``acc1``, ``acc5``, ``mean_per_class_recall`` = balanced
#: accuracy, multi-label ``mean_average_precision``) and ``metrics/linear_probe.py`` (``lp_acc1``, …).
_CLASSIFICATION_NAMES = {"accuracy": "acc1", "accuracy_top5": "acc5", "balanced_accuracy": "mean_per_class_recall",
                         "map_macro": "mean_average_precision"}


def clip_benchmark_name(task: str, metric: str) -> str:
    """CLIP_benchmark's name for medvl's ``task``/``metric``, or ``""`` when it has no such metric.

    Zero-shot metrics map only for the ``all`` class subset (CLIP_benchmark has no base/novel split);
    probe metrics of every K map to the same ``lp_*`` name (CLIP_benchmark records K as ``fewshot_k``).
    """
    parts = metric.split("/")
    if task == "retrieval" and len(parts) == 2 and parts[1].startswith("recall@"):
        k = parts[1].removeprefix("recall@")
        return {"i2t": f"text_retrieval_recall@{k}", "t2i": f"image_retrieval_recall@{k}"}.get(parts[0], "")
    if task == "zeroshot" and len(parts) == 3 and parts[1] == "all":
        return _CLASSIFICATION_NAMES.get(parts[2], "")
    if task == "probe" and len(parts) == 3 and parts[2] in _CLASSIFICATION_NAMES and parts[2] != "map_macro":
        return "lp_" + _CLASSIFICATION_NAMES[parts[2]]
    return ""


def metric_rows(tasks: Mapping[str, Mapping[str, Any]], provenance: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Flatten task results into one dict per metric (see the module docstring)."""
    prov = provenance or {}
    model = prov.get("model_name", "")
    rows = []
    for task, result in tasks.items():
        summaries = result.get("summaries") or {}
        for name, value in (result.get("metrics") or {}).items():
            s = summaries.get(name) or {}
            rows.append(
                {
                    "task": task,
                    "metric": name,
                    "clip_benchmark_name": clip_benchmark_name(task, name),
                    "value": value,
                    "std": s.get("std"),
                    "median": s.get("median"),
                    "q1": s.get("q1"),
                    "q3": s.get("q3"),
                    "n": s.get("n"),
                    "model": model,
                    "manifest_hash": prov.get("manifest_hash", ""),
                    "split": prov.get("split", ""),
                }
            )
    return rows


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]], digits: int = 4) -> str:
    """A Markdown table: task | metric | value (mean ± std and median (Q1–Q3) when aggregated)."""
    lines = ["| task | metric | value | median (Q1–Q3) |", "|---|---|---:|---:|"]
    for r in rows:
        value = _fmt(r["value"], digits) or "n/a"
        if r.get("std") is not None and r.get("n"):
            value = f"{value} ± {_fmt(r['std'], digits) or 'n/a'}"
        med = ""
        if r.get("median") is not None:
            med = f"{_fmt(r['median'], digits)} ({_fmt(r['q1'], digits)}–{_fmt(r['q3'], digits)})"
        lines.append(f"| {r['task']} | {r['metric']} | {value} | {med} |")
    return "\n".join(lines) + "\n"


def notes_markdown(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """The tasks' ``info.notes`` (what was probed, fallbacks, shortfalls, unconverged fits) as a list."""
    lines = [f"- {task}: {note}" for task, result in tasks.items() for note in ((result.get("info") or {}).get("notes") or [])]
    return ("\nNotes:\n" + "\n".join(lines) + "\n") if lines else ""


def write_results(
    out_dir: str | os.PathLike[str], tasks: Mapping[str, Mapping[str, Any]], provenance: Mapping[str, Any]
) -> dict[str, Path]:
    """Write ``results.json``, ``metrics.csv`` and ``results.md`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prov = dict(provenance)
    prov.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    rows = metric_rows(tasks, prov)
    atomic_write_json(out / "results.json", {"provenance": prov, "tasks": tasks})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (_fmt(v, 10) if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()})
    atomic_write_text(out / "metrics.csv", buf.getvalue())
    atomic_write_text(out / "results.md", markdown_table(rows) + notes_markdown(tasks))
    return {"json": out / "results.json", "csv": out / "metrics.csv", "markdown": out / "results.md"}
