"""Manifest summary: counts, label prevalence, captions, text lengths, files, splits, leakage.

:func:`summarize_manifest` returns a JSON-ready dict (what ``medvl data check --json`` writes);
:func:`render_summary` prints it with rich tables. All statistics are computed columnar.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medvl.data.manifest import Manifest, ValidationReport

if TYPE_CHECKING:
    from rich.console import Console

    from medvl.data.dataset import FileProblem
    from medvl.data.splits import LeakageReport

__all__ = ["render_summary", "summarize_manifest"]


def _stats(values: np.ndarray) -> dict[str, float | int | None]:
    """count, mean, std, min, p5, median, p95, max of a 1-D numeric array (None when empty)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"count": 0, "mean": None, "std": None, "min": None, "p5": None, "median": None, "p95": None, "max": None}
    q = np.quantile(v, [0.05, 0.5, 0.95])
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "p5": float(q[0]),
        "median": float(q[1]),
        "p95": float(q[2]),
        "max": float(v.max()),
    }


def _task_summary(manifest: Manifest, name: str) -> dict[str, Any]:
    spec = manifest.task(name)
    out: dict[str, Any] = {"kind": spec.kind, "classes": list(spec.classes)}
    if spec.novel_classes:
        out["novel_classes"] = list(spec.novel_classes)
    try:
        values = manifest.label_matrix(name)
        mask = manifest.label_mask(name)
    except (ValueError, TypeError) as exc:  # unreadable labels: validation reports the records
        out["error"] = str(exc)
        return out
    if spec.kind == "multilabel":
        annotated = mask.sum(axis=0)
        positives = np.where(mask, values >= 0.5, False).sum(axis=0)
        out["per_class"] = {
            c: {
                "positive": int(positives[j]),
                "annotated": int(annotated[j]),
                "prevalence": float(positives[j] / annotated[j]) if annotated[j] else None,
            }
            for j, c in enumerate(spec.classes)
        }
        split = manifest.records["split"].fillna("").astype(str).replace("", "(none)").to_numpy(dtype=object)
        pos = np.where(mask, values >= 0.5, False)
        out["positives_by_split"] = {
            str(s): {c: int(pos[split == s, j].sum()) for j, c in enumerate(spec.classes)}
            | {"n": int((split == s).sum())}
            for s in np.unique(split.astype(str))
        }
        n_pos = pos.sum(axis=1)
        out["positives_per_record"] = {str(k): int(v) for k, v in zip(*np.unique(n_pos, return_counts=True), strict=True)}
        out["unannotated_records"] = int((~mask.any(axis=1)).sum())
    elif spec.kind == "regression":
        out["annotated"] = int(mask.sum())
        out["stats"] = _stats(values[mask])
    else:
        labelled = values[mask]
        counts = np.bincount(labelled, minlength=spec.num_classes) if labelled.size else np.zeros(spec.num_classes)
        total = max(int(mask.sum()), 1)
        out["per_class"] = {
            c: {"count": int(counts[j]), "fraction": float(counts[j] / total)} for j, c in enumerate(spec.classes)
        }
        out["unannotated_records"] = int((~mask).sum())
    return out


def _text_summary(manifest: Manifest) -> dict[str, Any]:
    try:
        texts = pa.array(manifest.records["texts"].to_numpy(dtype=object), type=pa.list_(pa.string()), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return {"error": "texts column is not a list of strings (see validation)"}
    per_record = np.asarray(pc.fill_null(pc.list_value_length(texts), 0).to_numpy(zero_copy_only=False))
    flat = pc.list_flatten(texts)
    chars = np.asarray(pc.utf8_length(flat).to_numpy(zero_copy_only=False), dtype=np.float64) if len(flat) else np.zeros(0)
    words = (
        np.asarray(pc.list_value_length(pc.utf8_split_whitespace(flat)).to_numpy(zero_copy_only=False), dtype=np.float64)
        if len(flat)
        else np.zeros(0)
    )
    unique = int(pc.count_distinct(flat).as_py()) if len(flat) else 0
    return {
        "total_captions": int(per_record.sum()),
        "unique_captions": unique,
        "records_without_text": int((per_record == 0).sum()),
        "captions_per_record": _stats(per_record),
        "characters": _stats(chars),
        "words": _stats(words),
    }


def _split_summary(manifest: Manifest) -> dict[str, Any]:
    split = manifest.records["split"].fillna("").astype(str).replace("", "(none)")
    fold = pd.to_numeric(manifest.records["fold"], errors="coerce").fillna(-1).astype(int)
    table = pd.crosstab(split, fold)
    return {
        "splits": {str(k): int(v) for k, v in split.value_counts().sort_index().items()},
        "folds": {str(k): int(v) for k, v in fold.value_counts().sort_index().items()},
        "split_by_fold": {str(s): {str(f): int(table.loc[s, f]) for f in table.columns} for s in table.index},
    }


def summarize_manifest(
    manifest: Manifest,
    *,
    validation: ValidationReport | None = None,
    file_problems: Sequence[FileProblem] | None = None,
    files_checked: int | None = None,
    leakage: LeakageReport | None = None,
    max_listed: int = 50,
) -> dict[str, Any]:
    """A JSON-ready summary of ``manifest`` and of the checks passed in.

    ``ok`` is False when validation found errors, any file is missing/unreadable or any group
    crosses splits/folds.
    """
    from medvl import __version__

    records = manifest.records
    image_types = pd.Series(manifest.image_types()).replace("", "(unknown)").value_counts()
    summary: dict[str, Any] = {
        "medvl_version": __version__,
        "n_records": len(manifest),
        "n_groups": int(records["group"].astype(str).nunique()),
        "root": None if manifest.root is None else str(manifest.root),
        "manifest_hash": _safe_hash(manifest),
        "image_types": {str(k): int(v) for k, v in image_types.items()},
        "sources": {str(k): int(v) for k, v in records["source"].fillna("").astype(str).value_counts().items()},
        "tasks": {name: _task_summary(manifest, name) for name in manifest.tasks},
        "texts": _text_summary(manifest),
        **_split_summary(manifest),
    }
    problems = 0
    if validation is not None:
        summary["validation"] = {
            "n_errors": len(validation.errors),
            "n_bad_records": len(validation.bad_rows),
            "errors": [str(e) for e in validation.errors[:max_listed]],
        }
        problems += len(validation.errors)
    if file_problems is not None:
        missing = sum(p.reason == "file not found" for p in file_problems)
        summary["files"] = {
            "checked": files_checked,
            "missing": int(missing),
            "unreadable": len(file_problems) - int(missing),
            "problems": [
                {"id": p.id, "path": p.path, "reason": p.reason} for p in list(file_problems)[:max_listed]
            ],
        }
        problems += len(file_problems)
    if leakage is not None:
        summary["leakage"] = {
            "n_split_leaks": len(leakage.split_leaks),
            "n_fold_leaks": len(leakage.fold_leaks),
            "split_leaks": leakage.split_leaks[:max_listed],
            "fold_leaks": leakage.fold_leaks[:max_listed],
        }
        problems += len(leakage.split_leaks) + len(leakage.fold_leaks)
    summary["ok"] = problems == 0
    return summary


def _safe_hash(manifest: Manifest) -> str | None:
    try:
        return manifest.hash()
    except ValueError:  # content that cannot be stored canonically; validation says why
        return None


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_summary(summary: dict[str, Any], console: Console | None = None, max_rows: int = 20) -> None:
    """Print ``summary`` (from :func:`summarize_manifest`) as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    head = Table(title="Manifest", show_header=False)
    head.add_row("records", str(summary["n_records"]))
    head.add_row("groups", str(summary["n_groups"]))
    head.add_row("root", str(summary["root"]))
    head.add_row("hash", str(summary["manifest_hash"])[:16])
    head.add_row("image types", ", ".join(f"{k}: {v}" for k, v in summary["image_types"].items()))
    if any(summary["sources"]):
        head.add_row("sources", ", ".join(f"{k or '(none)'}: {v}" for k, v in summary["sources"].items()))
    console.print(head)

    texts = summary["texts"]
    if "error" in texts:
        console.print(f"[red]texts: {texts['error']}[/red]")
    else:
        t = Table(title="Texts")
        for col in ("", "mean", "min", "median", "p95", "max"):
            t.add_column(col)
        for key, label in (("captions_per_record", "captions / record"), ("words", "words / caption"), ("characters", "chars / caption")):
            s = texts[key]
            t.add_row(label, _fmt(s["mean"], 2), _fmt(s["min"], 0), _fmt(s["median"], 0), _fmt(s["p95"], 0), _fmt(s["max"], 0))
        console.print(t)
        console.print(
            f"captions: {texts['total_captions']} ({texts['unique_captions']} unique); "
            f"records without text: {texts['records_without_text']}"
        )

    for name, task in summary["tasks"].items():
        t = Table(title=f"Task {name} ({task['kind']})")
        if "error" in task:
            console.print(f"[red]task {name}: {task['error']}[/red]")
            continue
        if task["kind"] == "multilabel":
            for col in ("class", "positive", "annotated", "prevalence"):
                t.add_column(col)
            novel = set(task.get("novel_classes", []))
            for c, v in list(task["per_class"].items())[:max_rows]:
                label = f"{c} (novel)" if c in novel else c
                t.add_row(label, str(v["positive"]), str(v["annotated"]), _fmt(v["prevalence"], 3))
        elif task["kind"] == "regression":
            for col in ("annotated", "mean", "std", "min", "max"):
                t.add_column(col)
            s = task["stats"]
            t.add_row(str(task["annotated"]), _fmt(s["mean"], 3), _fmt(s["std"], 3), _fmt(s["min"], 3), _fmt(s["max"], 3))
        else:
            for col in ("class", "count", "fraction"):
                t.add_column(col)
            for c, v in list(task["per_class"].items())[:max_rows]:
                t.add_row(c, str(v["count"]), _fmt(v["fraction"], 3))
        console.print(t)

    sp = Table(title="Splits × folds (records)")
    folds = sorted({f for row in summary["split_by_fold"].values() for f in row}, key=int)
    sp.add_column("split")
    for f in folds:
        sp.add_column("no fold" if f == "-1" else f"fold {f}")
    for split, row in summary["split_by_fold"].items():
        sp.add_row(split, *[str(row.get(f, 0)) for f in folds])
    console.print(sp)

    if "validation" in summary:
        v = summary["validation"]
        style = "green" if v["n_errors"] == 0 else "red"
        console.print(f"[{style}]validation: {v['n_errors']} error(s) in {v['n_bad_records']} record(s)[/{style}]")
        for line in v["errors"][:max_rows]:
            console.print(f"  - {line}", markup=False)
    if "files" in summary:
        f = summary["files"]
        style = "green" if not f["problems"] else "red"
        console.print(f"[{style}]files: {f['checked']} checked, {f['missing']} missing, {f['unreadable']} unreadable[/{style}]")
        for p in f["problems"][:max_rows]:
            console.print(f"  - record {p['id']!r}: {p['path']}: {p['reason']}", markup=False)
    if "leakage" in summary:
        lk = summary["leakage"]
        n = lk["n_split_leaks"] + lk["n_fold_leaks"]
        style = "green" if n == 0 else "red"
        console.print(
            f"[{style}]group leakage: {lk['n_split_leaks']} group(s) in several splits, "
            f"{lk['n_fold_leaks']} in several folds[/{style}]"
        )
        for leak in (lk["split_leaks"] + lk["fold_leaks"])[:max_rows]:
            where = leak.get("splits") or leak.get("folds")
            console.print(f"  - group {leak['group']!r}: {where}", markup=False)
    console.print("[bold green]OK[/bold green]" if summary["ok"] else "[bold red]problems found[/bold red]")
