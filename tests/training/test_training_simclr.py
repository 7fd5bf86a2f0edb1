"""SimCLR from ``medvl train`` alone: the logged NT-Xent equals the formula on the views the data made."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tests.training._training_data import run_config_dict, train_tokenizer_file, write_tiny_dataset

from medvl.config.loading import ConfigError, config_from_dict
from medvl.config.training import RunConfig
from medvl.data.dataset import ImageTextDataset, collate, select_split
from medvl.data.manifest import read_manifest
from medvl.models import DualEncoder
from medvl.training.logging import read_jsonl
from medvl.training.run import run_training


def _config(manifest: Path, tokenizer: Path, **objective: object) -> RunConfig:
    raw = run_config_dict(manifest, tokenizer, epochs=1, batch_size=16, validate_at_start=False)
    raw["data"]["train_transforms"] = {"crop": "random_resized", "scale": [0.5, 1.0], "rotation_degrees": 10.0}  # type: ignore[index]
    raw["model"]["vision"] = {"kind": "tiny_vit", "image_size": 16, "patch_size": 4, "in_channels": 1,  # type: ignore[index]
                              "width": 16, "depth": 1, "heads": 2}
    raw["model"]["view_projection"] = {"kind": "mlp", "hidden_dim": 16}  # type: ignore[index]
    raw["objective"] = objective
    return config_from_dict(raw, RunConfig, source="test")


def _direct_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """SimCLR's NT-Xent written out row by row (Chen et al. 2020, Alg. 1)."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).double()
    n = z1.shape[0]
    total = 0.0
    for r in range(2 * n):
        partner = (r + n) % (2 * n)
        denom = sum(math.exp(float(z[r] @ z[k]) / tau) for k in range(2 * n) if k != r)
        total += -(float(z[r] @ z[partner]) / tau - math.log(denom))
    return total / (2 * n)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("simclr")
    manifest = write_tiny_dataset(root, n=24)
    return manifest, train_tokenizer_file(manifest)


def test_simclr_through_trainer_equals_formula_on_the_produced_views(data: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, tokenizer = data
    cfg = _config(manifest, tokenizer, terms=[{"name": "simclr", "kind": "simclr", "options": {"temperature": 0.2}}])
    run_training(cfg, tmp_path / "run")
    logged = read_jsonl(tmp_path / "run" / "logs" / "steps.jsonl")[0]["train/simclr"]

    model = DualEncoder.from_pretrained(tmp_path / "run" / "model")  # the initial weights
    model.train()
    ds = ImageTextDataset.from_config(select_split(read_manifest(manifest), cfg.data, "train"), cfg.data,
                                      train=True, seed=cfg.seed, second_view=True)
    ds.set_epoch(1)  # the trainer numbers training epochs from 1 (0 = the validation before any update)
    batch = collate([ds[i] for i in range(len(ds))])  # one batch = the whole split; NT-Xent ignores order
    with torch.no_grad():
        z1 = model.view_projection(model.vision(batch["pixel_values"]))  # type: ignore[misc]
        z2 = model.view_projection(model.vision(batch["pixel_values_view2"]))  # type: ignore[misc]
    assert logged == pytest.approx(_direct_nt_xent(z1, z2, 0.2), rel=1e-5)


def test_slip_with_balance_trains_and_logs_both_terms(data: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, tokenizer = data
    cfg = _config(manifest, tokenizer, balance=0.7, terms=[
        {"name": "clip", "kind": "clip"},
        {"name": "simclr", "kind": "simclr", "role": "task"},
    ])
    cfg.training.batch_size = 4
    run_training(cfg, tmp_path / "run")
    steps = read_jsonl(tmp_path / "run" / "logs" / "steps.jsonl")
    for term in ("clip", "simclr"):
        values = [s[f"train/{term}"] for s in steps]
        assert all(v > 0 for v in values) and len(set(values)) > 1
    first = steps[0]
    assert first["train/loss"] == pytest.approx(0.7 * first["train/clip"] + 0.3 * first["train/simclr"], rel=1e-5)


def test_simclr_without_projector_is_a_config_error(data: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, tokenizer = data
    cfg = _config(manifest, tokenizer, terms=[{"name": "simclr", "kind": "simclr"}])
    cfg.model.view_projection = None
    with pytest.raises(ConfigError, match="view_projection"):
        run_training(cfg, tmp_path / "run")
