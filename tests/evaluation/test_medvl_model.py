"""A medvl DualEncoder (tiny towers) through extraction, ``medvl evaluate --checkpoint`` and the
trainer's per-epoch validation hook: the same functions, so the same numbers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.config.evaluation import EvaluationConfig
from medvl.data.manifest import Manifest, TaskSpec, read_manifest, write_manifest

FINDINGS = ("effusion", "nodule", "edema")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from medvl.config.model import ModelConfig
    from medvl.models import build_model

    root = tmp_path_factory.mktemp("medvl")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(15):
        labels = (rng.random(3) < 0.4).astype(float)
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        present = [f for f, v in zip(FINDINGS, labels, strict=True) if v] or ["no finding"]
        rows.append({"id": f"c{i}", "image": f"images/{i}.png",
                     "texts": [f"there is {' and '.join(present)}.", f"findings: {', '.join(present)}."],
                     "labels.findings": labels.tolist(), "group": f"p{i}",
                     "split": "train" if i < 5 else "test", "fold": -1})
    manifest = write_manifest(Manifest(pd.DataFrame(rows), [TaskSpec("findings", "multilabel", FINDINGS)], root=root),
                              root / "manifest.parquet")
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate({
        "embed_dim": 8,
        "vision": {"kind": "tiny_cnn", "in_channels": 1, "widths": [4, 8]},
        "text": {"kind": "tiny_text", "vocab_size": 64, "max_length": 16, "width": 16, "depth": 1, "heads": 2},
        "classifiers": {"findings": {"kind": "multilabel", "num_classes": 3}},
    }))
    model.train_tokenizer([t for r in rows for t in r["texts"]])
    model.save_pretrained(root / "model")
    return manifest, root / "model"


def _dataset(manifest: Path, split: str):  # type: ignore[no-untyped-def]
    from medvl.config.data import DataConfig
    from medvl.data.dataset import ImageTextDataset, select_split
    from medvl.data.transforms import build_transforms

    cfg = DataConfig(manifest=manifest, image_size=16, channels=1)
    m = select_split(read_manifest(manifest), cfg, split)  # type: ignore[arg-type]
    return ImageTextDataset(m, train=False, transform=build_transforms(cfg, train=False), channels=1, seed=0)


def test_cli_checkpoint_and_validation_hook_agree(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from medvl.evaluation.embeddings import EmbeddingSet
    from medvl.evaluation.extraction import extract_embeddings
    from medvl.evaluation.validation import build_validation_hooks, validation_metrics
    from medvl.models import DualEncoder
    from medvl.models.loading import MedvlModel

    manifest, model_dir = setup
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text("retrieval:\n  label_tasks: []\nprogress: false\n")
    r = CliRunner().invoke(build_app(), ["evaluate", "--checkpoint", str(model_dir), "--data", str(manifest),
                                         "--tasks", "retrieval,classification", "--config", str(cfg_file),
                                         "--set", "batch_size=4", "--set", "data.image_size=16",
                                         "--set", "data.channels=1"])
    assert r.exit_code == 0, r.output
    res = json.loads((model_dir / "eval-test" / "results.json").read_text())
    assert res["provenance"]["model"]["kind"] == "medvl" and res["provenance"]["n_images"] == 10
    cls = res["tasks"]["classification"]["metrics"]
    assert {"findings/map_macro", "findings/auroc_macro", "findings/f1_macro"} <= set(cls)

    # per-epoch validation (the trainer's hook) on the same split gives the same numbers
    model = DualEncoder.from_pretrained(model_dir)
    ds = _dataset(manifest, "test")
    cfg = EvaluationConfig(progress=False, batch_size=4)
    direct = validation_metrics(model, cfg, dataset=ds)
    for task in ("retrieval", "classification"):
        for name, value in res["tasks"][task]["metrics"].items():
            assert direct[f"{task}/{name}"] == pytest.approx(value, nan_ok=True), name
    hooks = build_validation_hooks(SimpleNamespace(evaluation=None, training=SimpleNamespace(batch_size=3)), ds)
    model.train()
    logged = hooks[0](SimpleNamespace(model=model))
    assert model.training  # the hook restores the mode
    assert logged == pytest.approx(direct, nan_ok=True)
    assert build_validation_hooks(SimpleNamespace(evaluation=None), None) == []

    # extraction: shapes, every caption with its image index, head logits stored per task
    emb = extract_embeddings(MedvlModel(model), ds, batch_size=4, progress=False)
    assert emb.num_images == 10 and emb.num_texts == 20
    assert emb.caption_to_image.tolist() == np.repeat(np.arange(10), 2).tolist()
    assert emb.logits["findings"].shape == (10, 3) and emb.image_features is not None
    assert emb.meta["tasks"]["findings"]["kind"] == "multilabel"
    emb.save(tmp_path / "emb")
    assert validation_metrics(EmbeddingSet.load(tmp_path / "emb"), cfg) == pytest.approx(direct, nan_ok=True)


def test_extraction_rejects_training_mode_dataset(setup: tuple[Path, Path]) -> None:
    from medvl.data.dataset import ImageTextDataset
    from medvl.evaluation.extraction import extract_embeddings
    from medvl.models import DualEncoder
    from medvl.models.loading import MedvlModel

    manifest, model_dir = setup
    ds = ImageTextDataset(read_manifest(manifest), train=True, channels=1)
    with pytest.raises(ValueError, match="evaluation-mode"):
        extract_embeddings(MedvlModel(DualEncoder.from_pretrained(model_dir)), ds, progress=False)
