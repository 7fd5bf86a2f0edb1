"""A real sweep on tiny synthetic data: killed between cells, resumed, reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from _synthetic_run import synthetic_run_config
from medvl.config.experiment import ExperimentConfig
from medvl.experiments.cell import run_cell
from medvl.experiments.grid import Cell, expand_cells
from medvl.experiments.report import build_report
from medvl.experiments.sweep import run_sweep

CLS = "classification/findings/map_macro"


class SimulatedKill(RuntimeError):
    """Stands in for the process being killed between two cells."""


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, Path]:
    from medvl.data.synthetic.generator import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("study")
    generate_dataset(root / "data", SynthConfig(n=40, seed=1, size=32, n_folds=2, test_fraction=0.25))
    run = synthetic_run_config(root / "data" / "manifest.parquet", balance=0.0, epochs=1, batch_size=16)
    run["objective"]["gradient_probe"] = {"every_n_steps": 1}
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    config = ExperimentConfig.model_validate(
        {
            "name": "tiny",
            "grid": {"lambdas": [0.5, 1.0], "folds": [0, 1], "seeds": [0]},
            "stages": [
                {"name": "classifier", "config": "run.yaml", "over_lambda": False, "set": ["data.fold={fold}"],
                 "selection": {"metric": f"val/{CLS}", "mode": "max"}},
                {"name": "tune", "config": "run.yaml", "init_from": "classifier",
                 "set": ["objective.balance={lambda}", "data.fold={fold}"]},
            ],
            "classification_metric": CLS,
        }
    )
    return config, root


def test_killed_sweep_resumes_without_recomputing_and_reports(study: tuple[ExperimentConfig, Path]) -> None:
    config, root = study
    sweep = root / "sweep"
    ran: list[str] = []

    def killed_after_three(cfg: ExperimentConfig, cell: Cell, sweep_dir: Path, exp_dir: Path) -> None:
        if len(ran) == 3:
            raise SimulatedKill("killed between cells")
        run_cell(cfg, cell, sweep_dir, exp_dir)
        ran.append(cell.key)

    with pytest.raises(SimulatedKill):
        run_sweep(config, sweep, killed_after_three, experiment_dir=root, fail_fast=True, log=lambda _: None)
    finished = {c.key: c for c in expand_cells(config) if c.key in ran}
    stamps = {key: (sweep / c.relpath / "cell_results.json").stat().st_mtime_ns for key, c in finished.items()}
    trained = {key: (sweep / c.relpath / "run" / "training_result.json").stat().st_mtime_ns
               for key, c in finished.items()}

    summary = run_sweep(config, sweep, run_cell, experiment_dir=root, log=lambda _: None)
    assert summary.ok, summary.failed
    assert sorted(summary.skipped) == sorted(finished)
    assert len(summary.ran) == 3
    for key, cell in finished.items():  # finished cells were neither retrained nor re-evaluated
        assert (sweep / cell.relpath / "cell_results.json").stat().st_mtime_ns == stamps[key]
        assert (sweep / cell.relpath / "run" / "training_result.json").stat().st_mtime_ns == trained[key]

    files = build_report(sweep)
    text = files.report.read_text()
    for row in ("| classifier |", "| tune λ=0.5 |", "| tune λ=1.0 |"):
        line = next(line for line in text.splitlines() if line.startswith(row))
        assert re.search(r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)", line), line  # real numbers, not dashes
        assert line.rstrip().endswith("| 2 |")  # two folds aggregated
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (sweep / image).is_file()


def test_misspelt_selection_metric_fails_at_epoch_zero(study: tuple[ExperimentConfig, Path]) -> None:
    config, root = study
    stages = [config.stages[0].model_copy(update={"selection": config.selection.model_copy(
        update={"metric": "val/retrieval/R@5"})}), config.stages[1]]
    bad = config.model_copy(update={"stages": stages})
    cell = Cell("classifier", None, 0, 0)
    with pytest.raises(ValueError, match=r"selection metric 'val/retrieval/R@5' is not among .*recall@5"):
        run_cell(bad, cell, root / "bad_sweep", root)
    assert not (root / "bad_sweep" / cell.relpath / "cell_results.json").exists()
