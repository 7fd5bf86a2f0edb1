"""A tiny on-disk image–text dataset (PNG files + Parquet manifest) for CLI / run tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medvl.data.manifest import Manifest, TaskSpec, write_manifest

FINDINGS = ("effusion", "nodule", "edema")


def write_tiny_dataset(root: Path, n: int = 24, size: int = 16, seed: int = 0) -> Path:
    """``n`` grey images whose brightness pattern follows 3 findings; 2 captions each; train/val/test."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        labels = (rng.random(3) < 0.4).astype(float)
        image = rng.integers(0, 60, (size, size), dtype=np.uint8)
        for k in range(3):
            if labels[k]:
                image[k * size // 3:(k + 1) * size // 3, :] += 150
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        present = [f for f, v in zip(FINDINGS, labels, strict=True) if v] or ["no finding"]
        rows.append({
            "id": f"case{i}",
            "image": f"images/{i}.png",
            "texts": [f"there is {' and '.join(present)}.", f"findings: {', '.join(present)}."],
            "labels.findings": labels.tolist(),
            "group": f"p{i}",
            "split": "train" if i < n * 2 // 3 else ("val" if i < n * 5 // 6 else "test"),
            "fold": -1,
        })
    manifest = Manifest(pd.DataFrame(rows), [TaskSpec("findings", "multilabel", FINDINGS)], root=root)
    return write_manifest(manifest, root / "manifest.parquet")


def train_tokenizer_file(manifest: Path) -> Path:
    """Train the tiny text tower's tokenizer once on the manifest's texts and save it next to it.

    (WordPiece training in ``tokenizers`` is not reproducible across processes — ties are broken
    by hash order — so runs that must match share one trained tokenizer file.)
    """
    from medvl.config.model import ModelConfig
    from medvl.data.manifest import read_manifest
    from medvl.models import build_model

    model = build_model(ModelConfig.model_validate(run_config_dict(manifest)["model"]))
    texts = [t for row in read_manifest(manifest).records["texts"] for t in row]
    model.train_tokenizer(texts)
    target = manifest.parent / "tokenizer"
    model.save_pretrained(target)
    return target / "text" / "tokenizer.json"


def run_config_dict(manifest: Path, tokenizer: Path | None = None, **training: object) -> dict[str, object]:
    """A small run config on the tiny dataset: tiny CNN + tiny text tower, CLIP + BCE (λ = 0.5)."""
    return {
        "name": "tiny",
        "seed": 0,
        "data": {"manifest": str(manifest), "image_size": 16, "channels": 1,
                 "train_transforms": {"crop": "center", "rotation_degrees": 0.0, "brightness": 0.0,
                                      "contrast": 0.0}},
        "model": {
            "embed_dim": 8,
            "vision": {"kind": "tiny_cnn", "in_channels": 1, "widths": [4, 8]},
            "text": {"kind": "tiny_text", "vocab_size": 64, "max_length": 16, "width": 16, "depth": 1,
                     "heads": 2, "tokenizer": None if tokenizer is None else str(tokenizer)},
            "classifiers": {"findings": {"kind": "multilabel", "num_classes": 3}},
        },
        "objective": {
            "balance": 0.5,
            "terms": [{"name": "clip", "kind": "clip"},
                      {"name": "bce", "kind": "bce", "options": {"task": "findings"}}],
        },
        "training": {"epochs": 2, "batch_size": 4, "deterministic": True, "accelerator": "cpu",
                     "optimizer": {"lr": 3e-3}, "schedule": {"kind": "cosine", "warmup_steps": 1},
                     "logging": {"progress_bar": False, "every_n_steps": 1}, **training},
    }


#: A tiny open_clip ViT CLIP (2 vision blocks of width 32, 1 text block) for ``model_cfg`` of open_clip towers.
TINY_OPEN_CLIP = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                  "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def published_run_config(manifest: Path, model: dict[str, object]) -> dict[str, object]:
    """:func:`run_config_dict` for published-family towers: 32-px RGB images, ``model`` as given, one epoch,
    a checkpoint every 2 steps, no validation."""
    data = run_config_dict(manifest, epochs=1, checkpoint={"every_n_steps": 2}, validate_at_start=False)
    data["data"] = {**data["data"], "image_size": 32, "channels": 3}  # type: ignore[dict-item]
    data["model"] = model
    data["evaluation"] = {"validation": {"tasks": []}}
    return data

