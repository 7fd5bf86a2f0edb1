"""The README's slide pipeline, command by command: synth → tile → embed → import → sweep (smaller)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medvl.cli.main import build_app

pytest.importorskip("openslide")


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, f"medvl {' '.join(args)}\n{result.output}\n{result.exception!r}"
    return result.output


@pytest.mark.slow
def test_readme_prostate_pipeline_runs_and_reports_both_kappas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # the README's commands; only the number of slides, folds and epochs is smaller here
    _run(["slides", "synth", "--out", "data/prostate", "--n", "24", "--folds", "3"])
    out = _run(["slides", "tile", "data/prostate/slides", "--out", "data/prostate/tiles", "--mpp", "1.0",
                "--patch-size", "32", "--region-size", "128"])
    assert "tiled 24 slides" in out
    out = _run(["slides", "embed", "data/prostate/tiles", "--model", "data/prostate/patch_encoder",
                "--out", "data/prostate/features"])
    assert "24 slides" in out
    _run(["data", "import", "slides", "--root", "data/prostate", "--out", "data/prostate/manifest.parquet",
          "--set", "group_field=patient_id"])
    experiment = Path("data/prostate/experiment.yaml")
    experiment.write_text(experiment.read_text().replace("training.epochs=10", "training.epochs=2"))
    run = Path("data/prostate/run.yaml")
    run.write_text(run.read_text().replace("epochs: 12", "epochs: 2"))
    _run(["sweep", str(experiment), "--out", "runs/prostate", "--set", "grid.folds=[0]",
          "--set", "grid.lambdas=[0.9]", "--set", "jobs=1"])
    cell = json.loads(Path("runs/prostate/tune/lambda=0.9/fold=0/seed=0/cell_results.json").read_text())
    text = json.dumps(cell)
    assert "classification/grade/kappa_quadratic" in text and "retrieval/i2t/grade/kappa_quadratic" in text
    trajectory = cell["trajectory"]
    assert all(r.get("train/triplet", 1.0) > 0 for r in trajectory if r["epoch"] > 0)
    report = Path("runs/prostate/report.md").read_text()
    assert "kappa_quadratic" in report
