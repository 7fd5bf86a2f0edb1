"""Manifest read/validate speed: columnar implementation vs a per-row Python baseline.

Run: ``.venv/bin/python -m benchmarks.manifest_io [--rows 200000] [--classes 14]``

Prints seconds and rows/s for writing, reading and validating a Parquet manifest with medvl,
and the ratio against (a) a plain ``pandas.read_parquet`` (the floor for reading) and (b) a
straightforward per-row Python validator doing the same checks (ids, paths, texts, labels),
both measured in this process on the same data.
"""

from __future__ import annotations

import argparse
import posixpath
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.timing import best_of
from medvl.data.manifest import Manifest, TaskSpec, read_manifest, validate_manifest, write_manifest


def build(rows: int, classes: int, seed: int = 0) -> Manifest:
    """A synthetic manifest of ``rows`` records, 2 captions each, one multilabel and one ordinal task."""
    rng = np.random.default_rng(seed)
    index = np.arange(rows).astype(str)
    df = pd.DataFrame(
        {
            "id": pd.Series(np.char.add("r", index), dtype="str"),
            "image": pd.Series(np.char.add(np.char.add("files/p", index), ".dcm"), dtype="str"),
            "texts": pd.Series([["No acute cardiopulmonary process.", "Heart size is normal."]] * rows, dtype=object),
            "labels.findings": pd.Series(list((rng.random((rows, classes)) < 0.1).astype(np.float32)), dtype=object),
            "labels.grade": rng.integers(0, 6, rows),
            "group": pd.Series(np.char.add("patient", (np.arange(rows) // 3).astype(str)), dtype="str"),
        }
    )
    tasks = [
        TaskSpec("findings", "multilabel", tuple(f"c{i}" for i in range(classes))),
        TaskSpec("grade", "ordinal", tuple(str(g) for g in range(6))),
    ]
    return Manifest(df, tasks, "/data")


def per_row_validate(m: Manifest) -> list[tuple[str, str]]:
    """Baseline: the same checks as validate_manifest, one record at a time in Python."""
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    width = m.tasks["findings"].num_classes
    for rec in m.records.to_dict("records"):
        rid = rec["id"]
        if not isinstance(rid, str) or not rid or rid in seen:
            errors.append((str(rid), "id"))
        seen.add(rid)
        image = rec["image"]
        if not isinstance(image, str) or posixpath.normpath(image).startswith(("..", "/")):
            errors.append((rid, "image"))
        texts = rec["texts"]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            errors.append((rid, "texts"))
        labels = rec["labels.findings"]
        if len(labels) != width or not all(0 <= float(v) <= 1 for v in labels):
            errors.append((rid, "labels.findings"))
        grade = rec["labels.grade"]
        if not (float(grade).is_integer() and -1 <= grade < 6):
            errors.append((rid, "labels.grade"))
        if not isinstance(rec["group"], str) or not rec["group"]:
            errors.append((rid, "group"))
    return errors




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=14)
    args = parser.parse_args()
    m = build(args.rows, args.classes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.parquet"
        t_write, _ = best_of(lambda: write_manifest(m, path))
        t_pandas, _ = best_of(lambda: pd.read_parquet(path))
        t_read, loaded = best_of(lambda: read_manifest(path))
        t_validate, report = best_of(lambda: validate_manifest(loaded))
        t_baseline, baseline_errors = best_of(lambda: per_row_validate(loaded))
    assert report.ok and not baseline_errors, (report.format(), baseline_errors[:5])
    n = args.rows
    print(f"manifest of {n} rows, {args.classes} classes, 2 captions/record")
    print(f"  write parquet        {t_write:7.2f} s  ({n / t_write:,.0f} rows/s)")
    print(f"  pandas.read_parquet  {t_pandas:7.2f} s  ({n / t_pandas:,.0f} rows/s)  [floor]")
    print(f"  read_manifest        {t_read:7.2f} s  ({n / t_read:,.0f} rows/s)  ratio to floor {t_read / t_pandas:.2f}x")
    print(f"  validate_manifest    {t_validate:7.2f} s  ({n / t_validate:,.0f} rows/s)")
    print(f"  per-row validator    {t_baseline:7.2f} s  ({n / t_baseline:,.0f} rows/s)  [baseline]")
    print(f"  speed-up of validate_manifest over the per-row baseline: {t_baseline / t_validate:.1f}x")


if __name__ == "__main__":
    main()
