"""``medvl train`` end to end on a tiny on-disk dataset with the real data/model/objective packages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from _training_data import run_config_dict, train_tokenizer_file, write_tiny_dataset
from _training_tiny import KillAfter, assert_same_last_checkpoint
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.config.loading import config_from_dict
from medvl.config.training import RunConfig
from medvl.models.loading import load_trained_model
from medvl.training.run import run_training


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def _config_file(tmp: Path, manifest: Path, tokenizer: Path | None = None, **training: Any) -> Path:
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(manifest, tokenizer, **training)))
    return path


def test_train_command_writes_a_complete_run(tmp_path: Path, dataset: Path) -> None:
    config = _config_file(tmp_path, dataset)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(build_app(), ["train", str(config), "--out", str(out), "--set", "training.epochs=1"])
    assert result.exit_code == 0, result.output
    assert "completed: 1 epochs" in result.output
    # per-epoch validation metrics are printed, as sweep cells print them (epoch 0 = before any update)
    lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and lines[0].startswith("epoch 0 (before training) | val loss ")
    assert lines[1].startswith("epoch 1: train loss") and " | val loss " in lines[1]
    assert "retrieval/i2t/recall@5" in lines[1] and "classification/findings/map_macro" in lines[1]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 1 and saved["seed"] == 0  # resolved config with the override
    info = json.loads((out / "training_result.json").read_text())
    assert info["status"] == "completed" and info["provenance"]["manifest_hash"]
    epochs = [json.loads(line) for line in (out / "logs" / "epochs.jsonl").read_text().splitlines()]
    assert {"val/loss", "val/clip", "val/bce"} <= set(epochs[0]) and "train/bce" in epochs[1]
    model = load_trained_model(out, "last")
    assert type(model).__name__ == "DualEncoder"
    # an existing run directory is never silently overwritten
    again = runner.invoke(build_app(), ["train", str(config), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_bad_config_key_is_named(tmp_path: Path, dataset: Path) -> None:
    config = _config_file(tmp_path, dataset)
    result = CliRunner().invoke(build_app(), ["train", str(config), "--set", "training.optimizer.lr_=1"])
    assert result.exit_code == 2 and "training.optimizer.lr_: unknown key" in result.output


def test_killed_run_resumed_from_cli_matches_uninterrupted(tmp_path: Path, dataset: Path) -> None:
    """Real towers, random captions and seeded augmentation: the resumed run ends bit-identical."""
    training = {"epochs": 1, "checkpoint": {"every_n_steps": 2}, "validate_at_start": False}
    tokenizer = train_tokenizer_file(dataset)
    data = run_config_dict(dataset, tokenizer, **training)
    data["evaluation"] = {"validation": {"tasks": []}}  # the objective's validation loss only (speed)
    cfg = config_from_dict(data, RunConfig)
    run_training(cfg, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp_path / "killed", callbacks=[KillAfter(3)])  # 4 steps per epoch; resumes at 2
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    changed = runner.invoke(build_app(), ["train", str(config), "--out", str(tmp_path / "killed"), "--resume",
                                          "--set", "training.optimizer.lr=0.5"])
    assert changed.exit_code == 2 and "training.optimizer.lr" in changed.output
    resumed = runner.invoke(build_app(), ["train", str(config), "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert_same_last_checkpoint(tmp_path / "full", tmp_path / "killed")
