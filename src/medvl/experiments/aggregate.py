"""Aggregation of sweep cells: long tables, median (Q1–Q3), mean ± std, Δ% and Pareto fronts.

Every cell of a sweep writes ``cell_results.json`` (see :mod:`medvl.experiments.cell`)::

    {"cell": {"stage", "lambda", "fold", "seed"},
     "trajectory": [{"epoch": 0, "val/<metric>": v, "train/<term>": v, ...}, ...],
     "test": {"best": {"epoch": e, "metrics": {...}}, "last": {"epoch": e, "metrics": {...}}},
     "grad_probe": [{"step": s, "epoch": e, "<term>": norm, "ratio/<a>/<b>": r}, ...]}

The functions here turn those files into long pandas tables and summaries. Quantiles use
linear interpolation between order statistics (NumPy's default, Hyndman–Fan type 7), the
same rule as ``pandas.Series.quantile``; the standard deviation uses ``ddof=1`` and is NaN
for a single value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medvl.utils.io import read_json

__all__ = [
    "CELL_KEYS",
    "CELL_RESULTS_FILE",
    "final_test_frame",
    "format_mean_std",
    "format_median_iqr",
    "grad_probe_frame",
    "load_cell_results",
    "pareto_front",
    "relative_change",
    "summarise",
    "trajectory_frame",
]

CELL_RESULTS_FILE = "cell_results.json"
CELL_KEYS: tuple[str, ...] = ("stage", "lambda", "fold", "seed")


def load_cell_results(sweep_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every ``cell_results.json`` under ``sweep_dir`` (sorted by path, so order is stable)."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory not found: {root}")
    files = sorted(root.rglob(CELL_RESULTS_FILE))
    results = []
    for file in files:
        data = read_json(file)
        if "cell" not in data:
            raise ValueError(f"{file}: not a cell result (no 'cell' key)")
        data["_path"] = str(file)
        results.append(data)
    return results


def _cell_columns(result: dict[str, Any]) -> dict[str, Any]:
    cell = result["cell"]
    lam = cell.get("lambda")
    return {
        "stage": cell["stage"],
        "lambda": float("nan") if lam is None else float(lam),
        "fold": int(cell["fold"]),
        "seed": int(cell["seed"]),
    }


def _as_float(value: Any) -> float:
    if value is None:
        return float("nan")
    if isinstance(value, (bool, int, float, np.floating, np.integer)):
        return float(value)
    raise TypeError(f"metric value must be a number, got {value!r}")


def trajectory_frame(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Long table of per-epoch values: columns stage, lambda, fold, seed, epoch, metric, value."""
    rows = []
    for result in results:
        base = _cell_columns(result)
        for entry in result.get("trajectory", []):
            epoch = int(entry["epoch"])
            for name, value in entry.items():
                if name == "epoch" or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                rows.append({**base, "epoch": epoch, "metric": name, "value": float(value)})
    return pd.DataFrame(rows, columns=[*CELL_KEYS, "epoch", "metric", "value"])


def final_test_frame(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Long table of test results: columns stage, lambda, fold, seed, checkpoint, epoch, metric, value."""
    rows = []
    for result in results:
        base = _cell_columns(result)
        for checkpoint, block in (result.get("test") or {}).items():
            if block is None:
                continue
            epoch = block.get("epoch")
            for name, value in block.get("metrics", {}).items():
                if isinstance(value, (dict, list, str)):
                    continue
                rows.append(
                    {
                        **base,
                        "checkpoint": checkpoint,
                        "epoch": float("nan") if epoch is None else int(epoch),
                        "metric": name,
                        "value": _as_float(value),
                    }
                )
    return pd.DataFrame(rows, columns=[*CELL_KEYS, "checkpoint", "epoch", "metric", "value"])


def grad_probe_frame(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Long table of gradient-probe records: stage, lambda, fold, seed, step, epoch, quantity, value."""
    rows = []
    for result in results:
        base = _cell_columns(result)
        for entry in result.get("grad_probe", []):
            for name, value in entry.items():
                if name in ("step", "epoch") or not isinstance(value, (int, float)):
                    continue
                rows.append(
                    {**base, "step": int(entry["step"]), "epoch": entry.get("epoch"), "quantity": name,
                     "value": float(value)}
                )
    return pd.DataFrame(rows, columns=[*CELL_KEYS, "step", "epoch", "quantity", "value"])


def relative_change(
    test: pd.DataFrame,
    baseline_stage: str,
    baseline_checkpoint: str = "best",
) -> pd.DataFrame:
    """Add ``baseline`` and ``delta_pct`` columns: 100·(value − baseline)/|baseline|.

    The baseline of a row is the ``baseline_stage`` cell with the same fold, seed and metric
    (at ``baseline_checkpoint``), so Δ% is paired per fold before any aggregation. Rows whose
    baseline is missing or zero get NaN.
    """
    base = test[(test["stage"] == baseline_stage) & (test["checkpoint"] == baseline_checkpoint)]
    base = base[["fold", "seed", "metric", "value"]].rename(columns={"value": "baseline"})
    if base.duplicated(["fold", "seed", "metric"]).any():
        raise ValueError(f"baseline stage {baseline_stage!r} has several cells per fold/seed (does it vary λ?)")
    merged = test.merge(base, on=["fold", "seed", "metric"], how="left")
    denominator = merged["baseline"].abs().replace(0.0, np.nan)
    merged["delta_pct"] = 100.0 * (merged["value"] - merged["baseline"]) / denominator
    return merged


def _q(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q)) if values.size else float("nan")


def summarise(frame: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """Per group of ``by``: n, median, q1, q3, mean, std (ddof=1), min, max of ``value``.

    NaN values are excluded and counted in ``n_missing``. Groups keep a NaN λ (stages that
    do not vary λ) as their own group.
    """
    records = []
    for keys, group in frame.groupby(list(by), dropna=False, sort=True):
        values = group[value].to_numpy(dtype=float)
        finite = values[~np.isnan(values)]
        key_tuple = keys if isinstance(keys, tuple) else (keys,)
        records.append(
            {
                **dict(zip(by, key_tuple, strict=True)),
                "n": int(finite.size),
                "n_missing": int(values.size - finite.size),
                "median": _q(finite, 0.5),
                "q1": _q(finite, 0.25),
                "q3": _q(finite, 0.75),
                "mean": float(finite.mean()) if finite.size else float("nan"),
                "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
                "min": float(finite.min()) if finite.size else float("nan"),
                "max": float(finite.max()) if finite.size else float("nan"),
            }
        )
    columns = [*by, "n", "n_missing", "median", "q1", "q3", "mean", "std", "min", "max"]
    return pd.DataFrame(records, columns=columns)


def format_median_iqr(median: float, q1: float, q3: float, digits: int = 3) -> str:
    """``0.695 (0.693–0.695)``, as the Balancing Act's Table 2; ``–`` when missing."""
    if any(math.isnan(v) for v in (median, q1, q3)):
        return "–"
    return f"{median:.{digits}f} ({q1:.{digits}f}–{q3:.{digits}f})"


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``0.695 ± 0.004``; the ± part is dropped when std is NaN (a single value)."""
    if math.isnan(mean):
        return "–"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Mask of the points not dominated when *both* coordinates are maximised.

    ``points`` has shape (n, 2). A point is dominated when another point is ≥ in both
    coordinates and > in at least one. NaN points are never on the front.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {pts.shape}")
    finite = ~np.isnan(pts).any(axis=1)
    on_front = np.zeros(len(pts), dtype=bool)
    for i in np.flatnonzero(finite):
        others = pts[finite]
        dominated = np.any(np.all(others >= pts[i], axis=1) & np.any(others > pts[i], axis=1))
        on_front[i] = not dominated
    return on_front
