"""The shipped Balancing Act prostate config trains its triplet term at batch size 1 (issue 14).

Before, ``negatives: different_label`` drew negatives from the batch, the batch held one slide,
and ``train/triplet`` was 0.0 at every step: only 0.1·MSE trained and nothing warned. The
config now draws a different-grade report per slide from the dataset. The data here are tiny
synthetic bags in the shape the shipped config reads, the text tower a small frozen random
one (the paper's Dutch report model is not public); everything else is the shipped file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from medvl.config.loading import config_from_dict, load_yaml
from medvl.config.training import RunConfig
from medvl.data.manifest import Manifest, TaskSpec, write_manifest
from medvl.objectives import NoNegativeError, TripletLoss
from medvl.training.logging import read_jsonl
from medvl.training.run import run_training

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "balancing_act_prostate" / "run.yaml"
GRADES = ("benign", "ISUP 1", "ISUP 2", "ISUP 3", "ISUP 4", "ISUP 5")


def write_slide_bags(root: Path, bag_shape: tuple[int, ...], n: int = 40, folds: int = 5, seed: int = 0) -> Path:
    """``n`` slides: feature bags of ``bag_shape`` (per region) whose mean follows the grade; reports."""
    rng = np.random.default_rng(seed)
    (root / "features").mkdir(parents=True)
    rows = []
    for i in range(n):
        grade = i % 6
        regions = int(rng.integers(2, 5))
        bag = rng.normal(0.0, 1.0, (regions, *bag_shape)).astype(np.float32) + 0.3 * grade
        torch.save(torch.from_numpy(bag), root / "features" / f"slide{i}.pt")
        rows.append({"id": f"slide{i}", "image": f"features/slide{i}.pt", "image_type": "feature_bag",
                     "texts": [f"Microscopy: prostate biopsy number {i}. Conclusion: {GRADES[grade]}."],
                     "labels.grade": grade, "group": f"patient{i}", "split": "train", "fold": i % folds})
    manifest = Manifest(pd.DataFrame(rows), [TaskSpec("grade", "ordinal", GRADES)], root=root)
    return write_manifest(manifest, root / "manifest.parquet")


def shipped_config(manifest: Path, **objective_changes: Any) -> dict[str, Any]:
    """The shipped run config with this test's data, a small frozen text tower and 1 CPU epoch."""
    data = load_yaml(CONFIG)
    data["data"]["manifest"] = str(manifest)
    data["model"]["vision"]["weights"] = None  # the PANDA-trained H-ViT is not public; random init
    width = data["model"]["vision"].get("width", data["model"]["embed_dim"])
    data["model"]["text"] = {"kind": "tiny_text", "vocab_size": 64, "max_length": 24, "width": width,
                             "depth": 1, "heads": 3, "freeze": {"mode": "full"}}
    data["training"].update({"epochs": 1, "accelerator": "cpu", "deterministic": True,
                             "logging": {"every_n_steps": 1, "progress_bar": False}})
    data["evaluation"]["retrieval"]["precision_ks"] = [1, 3]  # validation folds of a few slides
    for key, value in objective_changes.items():
        data["objective"]["terms"][0]["options"][key] = value
    return data


def _bag_shape(cfg: RunConfig) -> tuple[int, ...]:
    """Region features (the frozen region level's output; region tokens go through the same
    encoder in tests/models/test_slide_hierarchical.py and the slide pipeline test)."""
    region = cfg.model.vision.region
    return (region.width,) if region is not None else (cfg.model.vision.input_dim,)


def test_shipped_prostate_config_has_a_nonzero_triplet_term_at_every_step(tmp_path: Path) -> None:
    shipped = config_from_dict(load_yaml(CONFIG), RunConfig, str(CONFIG))
    assert shipped.training.batch_size == 1 and shipped.training.accumulate_grad_batches == 16
    assert shipped.data.negatives is not None and shipped.data.negatives.task == "grade"
    manifest = write_slide_bags(tmp_path / "data", _bag_shape(shipped))
    cfg = config_from_dict(shipped_config(manifest), RunConfig, "test")

    seen: list[tuple[float, float]] = []

    def record(module: torch.nn.Module, _: Any, output: Any) -> None:
        if isinstance(module, TripletLoss) and module.training:
            seen.append((float(output["loss"].detach()), float(output["n_without_negative"])))

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = run_training(cfg, tmp_path / "run")
    finally:
        handle.remove()
    assert result.status == "completed"
    # 32 training slides at batch 1: 32 micro-steps, each with its own different-grade negative
    assert len(seen) == 32
    assert all(loss > 0.0 and missing == 0.0 for loss, missing in seen), seen
    steps = read_jsonl(tmp_path / "run" / "logs" / "steps.jsonl")
    assert len(steps) == 2  # 32 micro-batches / accumulation 16
    values = [s["train/triplet"] for s in steps]
    assert all(v > 0.0 for v in values) and values[0] != values[1]
    assert all(s["train/triplet.n_without_negative"] == 0.0 for s in steps)


def test_in_batch_negatives_at_batch_size_one_fail_loudly(tmp_path: Path) -> None:
    shipped = config_from_dict(load_yaml(CONFIG), RunConfig, str(CONFIG))
    manifest = write_slide_bags(tmp_path / "data", _bag_shape(shipped), n=20)
    raw = shipped_config(manifest, negatives="different_label")
    cfg = config_from_dict(raw, RunConfig, "test")
    with pytest.raises(NoNegativeError, match=r"'triplet'.*1 of 1 rows have no negative"):
        run_training(cfg, tmp_path / "run")
    raw["data"].pop("negatives")
    raw["objective"]["terms"][0]["options"]["negatives"] = "dataset"
    with pytest.raises(ValueError, match=r"data\.negatives is not set"):
        config_from_dict(raw, RunConfig, "test")
