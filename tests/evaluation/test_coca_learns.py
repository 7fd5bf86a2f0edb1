"""A tiny CoCa learns image-conditioned reports: caption loss falls and the findings the report labeller
reads in its generated reports beat an "always normal" report (clinical-efficacy F1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvl.config.evaluation import CaptioningOptions
from medvl.config.loading import config_from_dict
from medvl.config.training import RunConfig
from medvl.data.dataset import ImageTextDataset, select_split
from medvl.data.manifest import Manifest, TaskSpec, read_manifest, write_manifest
from medvl.evaluation.captioning import (
    ce_truth_from_labels,
    clinical_efficacy,
    reference_texts,
    run_captioning,
)
from medvl.models.loading.medvl import load_trained_model
from medvl.training.logging import read_jsonl
from medvl.training.run import run_training

pytest.importorskip("pycocoevalcap")

FINDINGS = ("pleural_effusion", "edema", "pneumothorax")
PHRASES = {"pleural_effusion": "Small pleural effusion.", "edema": "Mild pulmonary edema.",
           "pneumothorax": "Small pneumothorax."}


def _dataset(root: Path, n: int = 96, size: int = 16) -> Path:
    """Each finding brightens one horizontal band of the image; the report names the present findings."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        labels = (rng.random(3) < 0.35).astype(float)
        image = rng.integers(0, 50, (size, size), dtype=np.uint8)
        for k in range(3):
            if labels[k]:
                image[k * size // 3 : (k + 1) * size // 3] += 150
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        text = " ".join(PHRASES[f] for f, v in zip(FINDINGS, labels, strict=True) if v) or "No acute abnormality."
        rows.append({"id": f"r{i}", "image": f"images/{i}.png", "texts": [text], "labels.findings": labels.tolist(),
                     "group": f"p{i}", "split": "train" if i < n * 3 // 4 else ("val" if i < n * 7 // 8 else "test"),
                     "fold": -1})
    manifest = Manifest(pd.DataFrame(rows), [TaskSpec("findings", "multilabel", FINDINGS)], root=root)
    return write_manifest(manifest, root / "manifest.parquet")


@pytest.mark.slow
def test_tiny_coca_writes_reports_that_beat_always_normal(tmp_path: Path) -> None:
    manifest = _dataset(tmp_path / "data")
    cfg = config_from_dict({
        "name": "coca-learns", "seed": 0,
        "data": {"manifest": str(manifest), "image_size": 16, "channels": 1,
                 "train_transforms": {"crop": "center", "rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0}},
        "model": {"embed_dim": 16,
                  "vision": {"kind": "tiny_vit", "image_size": 16, "patch_size": 4, "in_channels": 1, "width": 32,
                             "depth": 1, "heads": 2},
                  "text": {"kind": "tiny_text", "vocab_size": 128, "max_length": 24, "width": 16, "depth": 1,
                           "heads": 2},
                  "decoder": {"kind": "tiny", "width": 32, "heads": 2, "max_length": 24}},
        "objective": {"balance": 0.2, "terms": [{"name": "clip", "kind": "clip"}, {"name": "cap", "kind": "caption"}]},
        "evaluation": {"validation": {"tasks": []}},
        "training": {"epochs": 25, "batch_size": 16, "optimizer": {"lr": 3e-3}, "schedule": {"kind": "constant"},
                     "checkpoint": {"monitor": "val/cap", "mode": "min"}, "logging": {"progress_bar": False}},
    }, RunConfig)
    run_training(cfg, tmp_path / "run")
    epochs = read_jsonl(tmp_path / "run" / "logs" / "epochs.jsonl")
    assert epochs[-1]["val/cap"] < 0.5 * epochs[0]["val/cap"]  # epoch 0 = before any update

    model = load_trained_model(tmp_path / "run", which="best")
    test = select_split(read_manifest(manifest), cfg.data, "test")
    ds = ImageTextDataset.from_config(test, cfg.data, train=False, seed=0)
    result = run_captioning(model, ds, reference_texts(ds.manifest.records, None, None),
                            CaptioningOptions(method="greedy"), labels={"findings": ds.labels("findings")},
                            classes={"findings": list(FINDINGS)})
    truth, names = ce_truth_from_labels(ds.labels("findings"), FINDINGS)
    normal = clinical_efficacy(["No acute abnormality."] * len(ds), truth, names)["metrics"]
    assert result["metrics"]["ce/f1_micro"] > normal["f1_micro"] + 0.2, (result["metrics"], normal)
