"""The sweep report renders tables with the right aggregates and embeds existing figures."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from medvl.config.experiment import ExperimentConfig
from medvl.experiments.grid import Cell
from medvl.experiments.report import build_report, markdown_table
from medvl.utils.io import atomic_write_json

CLS = "classification/findings/map_macro"
RET = "retrieval/i2t/recall@5"


def _config() -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "demo",
            "grid": {"lambdas": [0.9, 1.0], "folds": [0, 1, 2], "seeds": [0]},
            "stages": [
                {"name": "classifier", "inline": {}, "over_lambda": False},
                {"name": "tune", "inline": {}, "init_from": "classifier"},
            ],
            "baseline": {"stage": "classifier"},
            "classification_metric": CLS,
        }
    )


def _write_cell(root: Path, cell: Cell, cls: float, ret: float) -> None:
    trajectory = [
        {"epoch": e, f"val/{CLS}": cls + 0.01 * e, f"val/{RET}": ret * e / 2, "train/total": 1.0 / (e + 1)}
        for e in range(3)
    ]
    grad = [{"step": s, "epoch": 1, "contrastive": 1.0, "classification": 0.1 * (s + 1),
             "ratio/contrastive/classification": 10.0 / (s + 1)} for s in range(3)]
    atomic_write_json(
        root / cell.relpath / "cell_results.json",
        {
            "cell": cell.as_dict(),
            "trajectory": trajectory,
            "test": {"best": {"epoch": 2, "metrics": {CLS: cls, RET: ret}},
                     "last": {"epoch": 2, "metrics": {CLS: cls - 0.05, RET: ret}}},
            "grad_probe": grad,
        },
    )


def test_report_tables_and_figures(tmp_path: Path) -> None:
    cfg = _config()
    base = {0: 0.80, 1: 0.70, 2: 0.90}
    for fold, b in base.items():
        _write_cell(tmp_path, Cell("classifier", None, fold, 0), b, 0.0)
        _write_cell(tmp_path, Cell("tune", 0.9, fold, 0), b * 0.9, 0.30 + fold / 100)
        _write_cell(tmp_path, Cell("tune", 1.0, fold, 0), b * 0.3, 0.33 + fold / 100)
    files = build_report(tmp_path, cfg)
    text = files.report.read_text()

    # tune λ=0.9, best: mAP per fold 0.72, 0.63, 0.81 -> median 0.72, Q1 0.675, Q3 0.765; Δ% = -10 in every fold
    assert "| tune λ=0.9 | 0.720 (0.675–0.765) | 0.310 (0.305–0.315) | -10.0 | 3 |" in text
    assert "| tune λ=1.0 | 0.240 (0.225–0.255)" in text
    assert "-70.0" in text
    assert "λ = 1.0 (contrastive only) changes classification/findings/map_macro by -70.0 %" in text
    # every embedded image exists
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 3
    for image in images:
        assert (tmp_path / image).is_file()
    assert all(p.is_file() for p in files.figures) and any(p.suffix == ".svg" for p in files.figures)
    # CSVs hold every number
    tests = pd.read_csv(tmp_path / "tables" / "test_results.csv")
    assert len(tests) == 9 * 2 * 2  # 9 cells x 2 checkpoints x 2 metrics
    summary = pd.read_csv(tmp_path / "tables" / "summary.csv")
    row = summary[(summary["stage"] == "tune") & (summary["lambda"] == 0.9) & (summary["checkpoint"] == "best")
                  & (summary["metric"] == CLS)].iloc[0]
    assert row["median"] == pytest.approx(0.72)


def test_report_without_cells_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no finished cells"):
        build_report(tmp_path, _config())


def test_unknown_axis_metric_names_the_available_ones(tmp_path: Path) -> None:
    _write_cell(tmp_path, Cell("classifier", None, 0, 0), 0.8, 0.0)
    cfg = _config().model_copy(update={"retrieval_metric": "retrieval/i2t_R@5"})
    with pytest.raises(ValueError, match=r"retrieval_metric='retrieval/i2t_R@5' is not among .*recall@5"):
        build_report(tmp_path, cfg)


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
