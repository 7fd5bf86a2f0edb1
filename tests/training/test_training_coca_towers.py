"""CoCa on a published-family image tower (Hugging Face CLIP, open_clip ViT, timm CNN): ``medvl train``
runs a few steps; every term the objective names (CLIP and caption) is non-zero and moves, and the
decoder's cross-attention and the tower both receive updates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tests.training._training_data import run_config_dict, write_tiny_dataset

from medvl.config.loading import config_from_dict
from medvl.config.training import RunConfig
from medvl.training import resolve_checkpoint
from medvl.training.logging import read_jsonl
from medvl.training.run import run_training

TOWERS: dict[str, Callable[[Callable[[str], Path]], dict[str, Any]]] = {
    "hf_clip": lambda family: {"kind": "hf", "name_or_path": str(family("clip"))},
    "open_clip_vit": lambda family: {"kind": "open_clip", "model": str(family("open_clip"))},
    "timm_resnet": lambda family: {"kind": "timm", "model_name": "test_resnet"},
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("coca-towers"), n=18, size=32)


@pytest.mark.parametrize("tower", list(TOWERS))
def test_coca_trains_on_a_published_tower_and_every_term_moves(
    tower: str, manifest: Path, family_dir: Callable[[str], Path], tmp_path: Path
) -> None:
    raw = run_config_dict(manifest, epochs=2, batch_size=4, validate_at_start=False)
    raw["data"].update(image_size=32, channels=3)  # type: ignore[attr-defined]
    raw["model"].update(  # type: ignore[attr-defined]
        vision=TOWERS[tower](family_dir),
        classifiers={},
        decoder={
            "kind": "tiny",
            "width": 16,
            "heads": 2,
            "unimodal_layers": 1,
            "multimodal_layers": 1,
            "max_length": 16,
        },
    )
    raw["objective"] = {
        "balance": 0.5,
        "terms": [{"name": "clip", "kind": "clip"}, {"name": "caption", "kind": "caption"}],
    }
    raw["evaluation"] = {"validation": {"tasks": []}}
    cfg = config_from_dict(raw, RunConfig, source="test")
    run_training(cfg, tmp_path / "run")

    steps = read_jsonl(tmp_path / "run" / "logs" / "steps.jsonl")
    assert len(steps) >= 4
    for term in ("clip", "caption"):
        values = [s[f"train/{term}"] for s in steps]
        assert all(v > 0 for v in values), (term, values)
        assert len({round(v, 6) for v in values}) > 1, (term, values)
    first = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    last = load_file(str(resolve_checkpoint(tmp_path / "run", "last") / "model.safetensors"))
    for prefix in ("vision.", "decoder.image_proj.", "decoder.multimodal.0.cross_attn."):
        names = [k for k in first if k.startswith(prefix)]
        assert names and any(not torch.equal(first[k], last[k]) for k in names), prefix
