"""Aggregation against hand-computed medians, quartiles, Δ% and Pareto fronts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medvl.experiments.aggregate import (
    final_test_frame,
    format_mean_std,
    format_median_iqr,
    load_cell_results,
    pareto_front,
    relative_change,
    summarise,
    trajectory_frame,
)
from medvl.utils.io import atomic_write_json


def _cell(stage: str, lam: float | None, fold: int, best: float, last: float) -> dict:
    return {
        "cell": {"stage": stage, "lambda": lam, "fold": fold, "seed": 0},
        "trajectory": [
            {"epoch": 0, "val/mAP": best - 0.1, "train/total": 1.0},
            {"epoch": 1, "val/mAP": best, "train/total": 0.5},
        ],
        "test": {"best": {"epoch": 1, "metrics": {"mAP": best}}, "last": {"epoch": 1, "metrics": {"mAP": last}}},
    }


def test_summarise_matches_hand_computed_quartiles() -> None:
    # values 1, 2, 3, 4 (type-7 quantiles): Q1 = 1.75, median = 2.5, Q3 = 3.25
    frame = pd.DataFrame({"g": ["a"] * 4 + ["b"], "value": [4.0, 1.0, 3.0, 2.0, 7.0]})
    table = summarise(frame, by=["g"]).set_index("g")
    assert table.loc["a", "median"] == pytest.approx(2.5)
    assert table.loc["a", "q1"] == pytest.approx(1.75)
    assert table.loc["a", "q3"] == pytest.approx(3.25)
    assert table.loc["a", "mean"] == pytest.approx(2.5)
    assert table.loc["a", "std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert table.loc["b", "n"] == 1 and math.isnan(table.loc["b", "std"])


def test_summarise_five_folds_like_table_2() -> None:
    # five folds: 0.60, 0.70, 0.72, 0.80, 0.90 -> median 0.72, Q1 0.70, Q3 0.80
    frame = pd.DataFrame({"g": ["x"] * 5, "value": [0.80, 0.60, 0.90, 0.72, 0.70]})
    row = summarise(frame, by=["g"]).iloc[0]
    assert (row["median"], row["q1"], row["q3"]) == pytest.approx((0.72, 0.70, 0.80))
    assert format_median_iqr(row["median"], row["q1"], row["q3"]) == "0.720 (0.700–0.800)"


def test_nan_values_are_counted_not_dropped_silently() -> None:
    frame = pd.DataFrame({"g": ["a", "a", "a"], "value": [1.0, float("nan"), 3.0]})
    row = summarise(frame, by=["g"]).iloc[0]
    assert row["n"] == 2 and row["n_missing"] == 1 and row["median"] == pytest.approx(2.0)


def test_relative_change_is_paired_per_fold() -> None:
    results = [
        _cell("base", None, 0, best=0.80, last=0.80),
        _cell("base", None, 1, best=0.50, last=0.50),
        _cell("tune", 0.9, 0, best=0.72, last=0.70),
        _cell("tune", 0.9, 1, best=0.55, last=0.40),
    ]
    table = relative_change(final_test_frame(results), baseline_stage="base")
    tuned = table[(table["stage"] == "tune") & (table["checkpoint"] == "best")].sort_values("fold")
    assert tuned["delta_pct"].tolist() == pytest.approx([-10.0, 10.0])


def test_frames_from_files(tmp_path: Path) -> None:
    for fold in (0, 1):
        atomic_write_json(tmp_path / f"tune/lambda=0.9/fold={fold}/seed=0/cell_results.json",
                          _cell("tune", 0.9, fold, best=0.6 + fold / 10, last=0.5))
    results = load_cell_results(tmp_path)
    traj = trajectory_frame(results)
    assert set(traj["metric"]) == {"val/mAP", "train/total"}
    assert len(traj) == 2 * 2 * 2
    test = final_test_frame(results)
    assert sorted(test[test["checkpoint"] == "best"]["value"]) == pytest.approx([0.6, 0.7])


def test_load_rejects_foreign_json(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x/cell_results.json", {"metrics": {}})
    with pytest.raises(ValueError, match="not a cell result"):
        load_cell_results(tmp_path)


def test_pareto_front() -> None:
    points = np.array([[0.7, 0.3], [0.6, 0.35], [0.5, 0.2], [0.7, 0.3], [np.nan, 1.0], [0.1, 0.36]])
    assert pareto_front(points).tolist() == [True, True, False, True, False, True]


def test_formatting() -> None:
    assert format_median_iqr(float("nan"), 0.0, 1.0) == "–"
    assert format_mean_std(0.5, float("nan")) == "0.500"
    assert format_mean_std(0.5, 0.25, digits=2) == "0.50 ± 0.25"
