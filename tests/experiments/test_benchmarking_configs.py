"""Every config of configs/benchmarking trains a few steps on synthetic data; every term it names is
non-zero and moves (GUIDE: a shipped paper configuration is run, not only validated)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvl.config.loading import load_config
from medvl.config.training import RunConfig
from medvl.data.synthetic import SynthConfig, generate_dataset
from medvl.training.logging import read_jsonl
from medvl.training.run import run_training

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "benchmarking").glob("*.yaml"))
SWEEPS = ("experiment.yaml", "quick.yaml")  # the measured grid and its miniature on the README's demo data
RUN_CONFIGS = [p for p in CONFIGS if p.name not in SWEEPS]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "data"
    generate_dataset(out, SynthConfig(n=40, seed=0, size=32, val_fraction=0.15, test_fraction=0.15, n_folds=0))
    return out / "manifest.parquet"


def test_one_config_per_method_of_the_paper() -> None:
    names = {p.stem for p in RUN_CONFIGS}
    assert names == {"clip", "freeze_image_full", "freeze_text_full", "freeze_image_partial", "freeze_text_partial",
                     "simclr", "masked_cl", "flip", "coca"}


def test_quick_sweep_is_the_grid_in_miniature() -> None:
    """quick.yaml (the README's row) runs the same cells, methods, selection and tasks as experiment.yaml;
    only the length of training, the data and the evaluation's sizes differ."""
    full, quick = (yaml.safe_load((CONFIGS[0].parent / name).read_text(encoding="utf-8")) for name in SWEEPS)
    miniature = ("training.epochs=", "data.manifest=", "data.fold=")

    def stage(s: dict) -> tuple:
        kept = [v for v in s.get("set", []) if not v.startswith(miniature)]
        return s["name"], s["config"], s.get("over_lambda"), s.get("init_from"), kept

    assert [stage(s) for s in quick["stages"]] == [stage(s) for s in full["stages"]]
    for key in ("selection", "baseline", "retrieval_metric", "classification_metric", "report_metrics"):
        assert quick[key] == full[key], key
    assert quick["evaluation"]["tasks"] == full["evaluation"]["tasks"]
    same_probe = {k: v for k, v in full["evaluation"]["probe"].items() if k != "c_grid"}
    assert {k: v for k, v in quick["evaluation"]["probe"].items() if k != "c_grid"} == same_probe
    assert all("training.epochs=1" in s["set"] for s in quick["stages"])


@pytest.mark.slow
@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.stem)
def test_config_runs_and_every_term_moves(path: Path, synth: Path, tmp_path: Path) -> None:
    cfg = load_config(path, RunConfig, overrides=[
        f"data.manifest={synth}", "training.epochs=1", "training.batch_size=8", "training.validate_at_start=false",
        "training.logging.every_n_steps=1", "training.checkpoint.monitor=val/loss", "training.checkpoint.mode=min",
        "evaluation.validation.tasks=[]",
    ])
    run_training(cfg, tmp_path / "run")
    steps = read_jsonl(tmp_path / "run" / "logs" / "steps.jsonl")
    assert len(steps) >= 3
    for term in cfg.objective.terms:
        values = [s[f"train/{term.name}"] for s in steps]
        assert all(v > 0 for v in values), (term.name, values)
        assert len({round(v, 6) for v in values}) > 1, (term.name, values)
