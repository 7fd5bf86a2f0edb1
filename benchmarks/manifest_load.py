"""Loading a multi-million-row manifest: medvl Parquet vs pandas CSV reading (same data, same process).

Run: ``.venv/bin/python -m benchmarks.manifest_load [--rows 1000000] [--classes 14] [--repeat 2] [--csv-decode]``
(``--rows 3000000`` for the "few million rows" case; the default keeps the run near a minute here.)

Builds a synthetic manifest (``benchmarks.manifest_io.build``: 2 captions and a 14-class
multilabel vector per record, groups of 3), writes it once as Parquet (``write_manifest``) and
once as CSV (list cells as JSON, the same content as ``write_manifest`` would write, encoded
with a vectorised shortcut so that setup stays short), then times:

* ``pyarrow.parquet.read_table``: the columnar floor (Arrow table, no pandas objects);
* ``medvl read_manifest(.parquet)``: the manifest as a pandas DataFrame (list cells as arrays);
* ``pandas.read_csv(.csv)``: the baseline: raw strings only, list cells *not* parsed;
* ``medvl read_manifest(.csv)`` (``--csv-decode``): CSV with list cells decoded (what a CSV
  manifest really costs);
* ``medvl label_matrix`` on the Parquet manifest: (N, C) float32 labels for training.

Prints seconds, rows/s and the ratio of each against the pandas CSV baseline (best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from benchmarks.manifest_io import build
from benchmarks.timing import best_of
from medvl.data.manifest import Manifest, read_manifest, sidecar_path, write_manifest
from medvl.utils.io import atomic_write_json


def write_csv(manifest: Manifest, path: Path) -> None:
    """The manifest as CSV with JSON list cells (as ``write_manifest`` writes it, vectorised)."""
    frame = manifest.records.copy()
    cache: dict[tuple[str, ...], str] = {}
    frame["texts"] = [cache.setdefault(tuple(t), json.dumps(list(t))) for t in frame["texts"]]
    for column in [c for c in frame.columns if c.startswith("labels.")]:
        if frame[column].dtype == object:
            cells = np.where(np.stack(frame[column].to_numpy()) >= 0.5, "1.0", "0.0")
            encoded = cells[:, 0].astype(object)
            for k in range(1, cells.shape[1]):
                encoded = encoded + ", " + cells[:, k]
            frame[column] = "[" + encoded + "]"
    pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)
    atomic_write_json(sidecar_path(path), {"format_version": 1, "tasks": [t.to_dict() for t in manifest.tasks.values()]})




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=14)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--csv-decode", action="store_true", help="Also time medvl's CSV read with list decoding (slow).")
    args = parser.parse_args()

    start = time.perf_counter()
    manifest = build(args.rows, args.classes)
    print(f"built {args.rows:,} records in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        parquet, csv = Path(tmp) / "m.parquet", Path(tmp) / "m.csv"
        write_s, _ = best_of(lambda: write_manifest(manifest, parquet), 1)
        csv_write_s, _ = best_of(lambda: write_csv(manifest, csv), 1)
        print(f"write: parquet {write_s:.1f} s ({parquet.stat().st_size / 2**20:.0f} MiB), "
              f"csv {csv_write_s:.1f} s ({csv.stat().st_size / 2**20:.0f} MiB)")


        base_s, frame = best_of(lambda: pd.read_csv(csv, dtype=str, keep_default_na=False), args.repeat)
        assert len(frame) == args.rows
        del frame
        arrow_s, table = best_of(lambda: pq.read_table(parquet), args.repeat)
        assert table.num_rows == args.rows
        del table
        pq_s, loaded = best_of(lambda: read_manifest(parquet), args.repeat)
        assert len(loaded) == args.rows
        labels_s, labels = best_of(lambda: loaded.label_matrix("findings"), args.repeat)
        assert labels.shape == (args.rows, args.classes)
        rows = [
            ("pandas read_csv (baseline, lists unparsed)", base_s),
            ("pyarrow read_table parquet (Arrow floor)", arrow_s),
            ("medvl read_manifest parquet", pq_s),
            ("medvl label_matrix (N, C) from parquet", labels_s),
        ]
        if args.csv_decode:
            csv_s, loaded_csv = best_of(lambda: read_manifest(csv), 1)
            assert len(loaded_csv) == args.rows
            rows.append(("medvl read_manifest csv (lists decoded)", csv_s))
    print(f"\n{args.rows:,} rows, {args.classes} classes, best of {args.repeat}")
    print(f"{'operation':<45} {'seconds':>8} {'rows/s':>14} {'vs baseline':>12}")
    for name, seconds in rows:
        print(f"{name:<45} {seconds:8.2f} {args.rows / seconds:14,.0f} {base_s / seconds:11.1f}x")


if __name__ == "__main__":
    main()
