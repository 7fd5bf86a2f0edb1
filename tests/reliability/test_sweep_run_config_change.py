"""#12: editing a stage's run config between sweep runs is detected; nothing is mixed or written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _tiny_sweep import medvl, write_experiment


@pytest.mark.slow
def test_edited_stage_run_config_is_refused_naming_cell_and_key(tmp_path: Path) -> None:
    experiment = write_experiment(tmp_path, folds=[0])
    first = medvl("sweep", str(experiment), "--out", "sweep", "--no-report", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    results = tmp_path / "sweep/classifier/lambda=-/fold=0/seed=0/cell_results.json"
    stamp = results.stat().st_mtime_ns
    saved_experiment = (tmp_path / "sweep/experiment.yaml").read_text()

    run = yaml.safe_load((tmp_path / "run.yaml").read_text())
    run["training"]["optimizer"]["lr"] = 5e-3  # the stage's run config changes; experiment.yaml does not
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    second = medvl("sweep", str(experiment), "--out", "sweep", cwd=tmp_path)
    assert second.returncode == 2  # a configuration error (UserInputError), not a crash
    message = second.stdout + second.stderr
    assert "Traceback" not in message
    assert "classifier[λ=-,fold=0,seed=0] (finished)" in message
    assert "training.optimizer.lr: 0.001 -> 0.005" in message
    assert results.stat().st_mtime_ns == stamp  # nothing rewritten, no report of mixed cells
    assert (tmp_path / "sweep/experiment.yaml").read_text() == saved_experiment
    assert not (tmp_path / "sweep/report.md").exists()

    run["training"]["optimizer"]["lr"] = 1e-3  # reverted: the sweep continues (everything finished)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    third = medvl("sweep", str(experiment), "--out", "sweep", "--no-report", cwd=tmp_path)
    assert third.returncode == 0 and "1 of 1 cells already finished" in third.stdout
