"""``medvl data check`` on a manifest full of group leakage vs the same check without leaks.

Run: ``.venv/bin/python -m benchmarks.leakage [--rows 1000000] [--leaking-groups 200000]``

Builds a Parquet manifest of ``rows`` records in groups of 4 (patients), assigned to
train/val/test and folds, and a copy in which ``leaking-groups`` groups have one record moved to
another split and fold (so each is reported twice: split and fold leakage). Both are checked
with the real command (``medvl data check --no-verify-files --json``: read, validate, summarise,
leakage report, render), in this process, and the ratio leak / no-leak is printed. The issue's
target: within 2× (before the vectorised ``find_group_leakage`` it was 188 s vs 16 s, 11.8×).
It also times ``find_group_leakage`` alone on the leaking manifest.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.timing import best_of
from medvl.cli.main import main as medvl_main
from medvl.data.manifest import Manifest, TaskSpec, read_manifest, write_manifest
from medvl.data.splits import find_group_leakage


def build(rows: int, leaking_groups: int, seed: int = 0) -> tuple[Manifest, Manifest]:
    """(clean, leaking) manifests of ``rows`` records in groups of 4; see the module docstring."""
    rng = np.random.default_rng(seed)
    index = np.arange(rows)
    group = index // 4
    n_groups = int(group.max()) + 1
    group_split = rng.choice(np.array(["train", "val", "test"], dtype=object), size=n_groups, p=[0.7, 0.1, 0.2])
    group_fold = rng.integers(0, 5, n_groups)
    text = index.astype(str)
    df = pd.DataFrame({
        "id": pd.Series(np.char.add("r", text), dtype="str"),
        "image": pd.Series(np.char.add(np.char.add("img/", text), ".png"), dtype="str"),
        "texts": pd.Series([["No acute cardiopulmonary process."]] * rows, dtype=object),
        "labels.finding": rng.integers(0, 2, rows),
        "group": pd.Series(np.char.add("p", group.astype(str)), dtype="str"),
        "split": group_split[group],
        "fold": group_fold[group],
    })
    tasks = [TaskSpec("finding", "multiclass", ("absent", "present"))]
    clean = Manifest(df, tasks, "/data")
    leaky = df.copy()
    moved = rng.choice(n_groups, size=min(leaking_groups, n_groups), replace=False) * 4  # first record of each
    other = {"train": "test", "val": "train", "test": "train"}
    leaky.loc[moved, "split"] = [other[s] for s in leaky.loc[moved, "split"]]
    leaky.loc[moved, "fold"] = (leaky.loc[moved, "fold"].to_numpy() + 1) % 5
    return clean, Manifest(leaky, tasks, "/data")


def check(path: Path, summary: Path) -> dict[str, object]:
    """``medvl data check PATH --no-verify-files --json SUMMARY`` in process (its table output discarded)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        medvl_main(["data", "check", str(path), "--no-verify-files", "--json", str(summary)])
    result: dict[str, object] = json.loads(summary.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--leaking-groups", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    clean, leaky = build(args.rows, args.leaking_groups)
    with tempfile.TemporaryDirectory() as tmp:
        clean_path = write_manifest(clean, Path(tmp) / "clean.parquet")
        leaky_path = write_manifest(leaky, Path(tmp) / "leaky.parquet")
        check(write_manifest(build(100, 10)[1], Path(tmp) / "warm.parquet"), Path(tmp) / "warm.json")  # imports
        t_clean, clean_summary = best_of(lambda: check(clean_path, Path(tmp) / "clean.json"), args.repeat)
        t_leaky, leaky_summary = best_of(lambda: check(leaky_path, Path(tmp) / "leaky.json"), args.repeat)
        loaded = read_manifest(leaky_path)
        t_find, report = best_of(lambda: find_group_leakage(loaded), args.repeat)
    assert len(report.split_leaks) == len(report.fold_leaks) == min(args.leaking_groups, (args.rows + 3) // 4)
    assert clean_summary["ok"] and not leaky_summary["ok"]
    print(f"manifest of {args.rows:,} records ({(args.rows + 3) // 4:,} groups), "
          f"{len(report.split_leaks):,} groups leaking across splits and folds")
    print(f"  medvl data check, no leaks      {t_clean:7.2f} s  [baseline]")
    print(f"  medvl data check, with leaks    {t_leaky:7.2f} s")
    print(f"  find_group_leakage alone        {t_find:7.2f} s")
    print(f"  ratio leaks / no leaks: {t_leaky / t_clean:.2f}x  (target <= 2x)")


if __name__ == "__main__":
    main()
