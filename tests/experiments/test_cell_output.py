"""What a sweep cell writes to the terminal: no per-batch bars from parallel cells, attributable lines."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from medvl.config.experiment import ExperimentConfig
from medvl.experiments.cell import cell_output_mode
from medvl.experiments.grid import Cell, expand_cells
from medvl.experiments.sweep import run_sweep
from medvl.training.callbacks import EpochSummary
from medvl.utils.io import atomic_write_json


def _config(jobs: int) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "grid": {"lambdas": [0.5, 1.0], "folds": [0], "seeds": [0]},
        "stages": [{"name": "classifier", "inline": {}, "over_lambda": False},
                   {"name": "tune", "inline": {}, "init_from": "classifier"}],
        "jobs": jobs,
        "classification_metric": "classification/findings/map_macro",
    })


def output_mode_runner(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> None:
    """Records the cell's output mode (picklable, runs in the sweep's workers)."""
    bars, prefix = cell_output_mode(cell)
    with (sweep_dir / "modes.jsonl").open("a") as handle:
        handle.write(json.dumps({"key": cell.key, "bars": bars, "prefix": prefix}) + "\n")
    atomic_write_json(sweep_dir / cell.relpath / "cell_results.json", {"cell": cell.as_dict()})


@pytest.mark.slow  # two spawned workers import torch
def test_parallel_cells_draw_no_progress_bars_and_prefix_their_lines(tmp_path: Path) -> None:
    summary = run_sweep(_config(jobs=2), tmp_path, output_mode_runner, log=lambda _: None)
    assert summary.ok
    modes = [json.loads(line) for line in (tmp_path / "modes.jsonl").read_text().splitlines()]
    assert len(modes) == 3
    for mode in modes:
        assert mode["bars"] is False  # two tqdm bars would share one terminal line
        assert mode["prefix"] == f"[{mode['key']}] "


def test_cell_in_the_main_process_keeps_its_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = expand_cells(_config(jobs=1))[0]
    assert multiprocessing.parent_process() is None
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert cell_output_mode(cell) == (True, "  ")
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)  # a log file: no carriage-return bars
    assert cell_output_mode(cell) == (False, "  ")


def test_epoch_summary_line() -> None:
    lines: list[str] = []
    summary = EpochSummary(None, log=lines.append, prefix="[tune λ=0.5] ", monitor="val/retrieval/i2t/mrr")
    record = {"epoch": 3, "train/loss": 0.51234, "val/loss": 0.6, "val/retrieval/i2t/recall@1": 0.1,
              "val/retrieval/i2t/recall@5": 0.25, "val/retrieval/t2i/recall@5": 0.2, "val/retrieval/i2t/mrr": 0.3,
              "val/classification/findings/map_macro": 0.42, "val/classification/findings/auroc_macro": 0.7,
              "val/classification/grade/kappa": 0.5}
    summary.on_epoch_end(object(), record)
    assert lines == ["[tune λ=0.5] epoch 3: train loss 0.5123 | val loss 0.6, retrieval/i2t/mrr 0.3, "
                     "retrieval/i2t/recall@5 0.25, retrieval/t2i/recall@5 0.2, classification/findings/map_macro 0.42, "
                     "classification/grade/kappa 0.5"]
