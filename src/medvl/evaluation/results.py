"""Result files of an evaluation: ``results.json``, ``metrics.csv`` and a Markdown table.

``results.json``::

    {"provenance": {medvl_version, created, model, manifest, manifest_hash, split, seeds,
                    config, skipped, …},
     "tasks": {"retrieval": {"metrics": {...}, "summaries": {...}?, "options": {...}, "info": {...}},
               ...}}

``metrics.csv``: one row per metric — ``task, metric, value, std, median, q1, q3, n`` (the last
five only for metrics aggregated over seeds) plus ``model, manifest_hash, split``.
Non-finite values are written as empty cells / JSON null.
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

__all__ = ["RESULT_COLUMNS", "markdown_table", "metric_rows", "write_results"]

RESULT_COLUMNS = ("task", "metric", "value", "std", "median", "q1", "q3", "n", "model", "manifest_hash", "split")


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
    atomic_write_text(out / "results.md", markdown_table(rows))
    return {"json": out / "results.json", "csv": out / "metrics.csv", "markdown": out / "results.md"}
