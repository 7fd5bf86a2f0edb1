"""Freezing semantics (docs/models.md): exact trainable-parameter counts per mode."""

from __future__ import annotations

import pytest
import torch

from medvl.config.loading import ConfigError, config_from_dict
from medvl.config.model import ModelConfig
from medvl.models import build_model, count_parameters

# TinyViT(image 16, patch 4, width 32, depth 2, heads 2, mlp_ratio 2, 3 channels), counted by hand:
EMBED = 3 * 4 * 4 * 32 + 32 + 32 + 17 * 32  # conv weight + conv bias + CLS + 17 positions = 2144
NORM = 2 * 32  # LayerNorm weight + bias
BLOCK = NORM + (3 * 32 * 32 + 3 * 32) + (32 * 32 + 32) + NORM + (32 * 64 + 64) + (64 * 32 + 32)  # 8544
VIT_TOTAL = EMBED + 2 * BLOCK + NORM  # 19296


def cfg(
    vision_freeze: dict[str, object] | None = None, text_freeze: dict[str, object] | None = None, **kw: object
) -> ModelConfig:
    vision: dict[str, object] = {
        "kind": "tiny_vit",
        "image_size": 16,
        "patch_size": 4,
        "width": 32,
        "depth": 2,
        "heads": 2,
    }
    if vision_freeze is not None:
        vision["freeze"] = vision_freeze
    text: dict[str, object] = {
        "kind": "tiny_text",
        "vocab_size": 64,
        "width": 16,
        "depth": 1,
        "heads": 2,
        "max_length": 8,
    }
    if text_freeze is not None:
        text["freeze"] = text_freeze
    data: dict[str, object] = {"embed_dim": 8, "vision": vision, "text": text}
    data.update(kw)
    return config_from_dict(data, ModelConfig)


def test_hand_counted_vit_size() -> None:
    model = build_model(cfg())
    assert count_parameters(model.vision) == VIT_TOTAL == 19296
    assert len(model.vision.layer_groups()) == 4  # embedding, block 0, block 1, final norm
    assert model.trainable_parameter_counts()["vision"] == VIT_TOTAL


@pytest.mark.parametrize(
    ("freeze", "frozen"),
    [
        ({"mode": "none"}, 0),
        ({"mode": "full"}, VIT_TOTAL),
        ({"mode": "partial", "groups": 1}, EMBED),
        ({"mode": "partial", "groups": 3}, EMBED + 2 * BLOCK),
        ({"mode": "partial", "groups": 4}, VIT_TOTAL),
        ({"mode": "partial", "fraction": 0.5}, EMBED + BLOCK),  # ceil(0.5 · 4) = 2 groups
        ({"mode": "partial", "fraction": 0.6}, EMBED + 2 * BLOCK),  # ceil(2.4) = 3 groups
        ({"mode": "partial", "groups": 2, "train_norms": True}, EMBED + BLOCK - 2 * NORM),
        ({"mode": "partial", "indices": [1, 2]}, 2 * BLOCK),  # blocks only, embedding trainable (A.4)
        ({"mode": "partial", "indices": [-1, 0]}, NORM + EMBED),
    ],
)
def test_trainable_counts(freeze: dict[str, object], frozen: int) -> None:
    model = build_model(cfg(vision_freeze=freeze))
    assert model.trainable_parameter_counts()["vision"] == VIT_TOTAL - frozen


def test_heads_are_never_frozen() -> None:
    model = build_model(cfg(vision_freeze={"mode": "full"}, text_freeze={"mode": "full"}))
    counts = model.trainable_parameter_counts()
    assert counts["vision"] == 0 and counts["text"] == 0
    # vision projection 32→8 + text projection 16→8 (no bias) + the log logit scale
    assert counts["heads"] == counts["total"] == 32 * 8 + 16 * 8 + 1


def test_full_freeze_keeps_tower_in_eval_mode() -> None:
    model = build_model(cfg(vision_freeze={"mode": "full"}))
    model.train()
    assert model.training and not model.vision.training
    assert all(not m.training for m in model.vision.modules())
    assert model.vision_projection.training


def test_frozen_batchnorm_statistics_stay_fixed() -> None:
    data = {
        "embed_dim": 8,
        "text": None,
        "vision": {"kind": "tiny_cnn", "widths": [4, 8], "freeze": {"mode": "partial", "groups": 1}},
    }
    model = build_model(config_from_dict(data, ModelConfig))
    model.train()
    stem_bn = model.vision.stem[1]
    stage_bn = model.vision.stages[0][1]
    assert not stem_bn.training and stage_bn.training
    before_stem, before_stage = stem_bn.running_mean.clone(), stage_bn.running_mean.clone()
    model({"pixel_values": torch.randn(4, 3, 8, 8) * 3 + 1})
    assert torch.equal(stem_bn.running_mean, before_stem)
    assert not torch.equal(stage_bn.running_mean, before_stage)


def test_too_many_groups_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"freeze.groups=9 but the tower has only 4 layer groups"):
        build_model(cfg(vision_freeze={"mode": "partial", "groups": 9}))


@pytest.mark.parametrize(
    ("freeze", "message"),
    [
        ({"mode": "partial"}, "exactly one of"),
        ({"mode": "partial", "groups": 1, "fraction": 0.5}, "exactly one of"),
        ({"mode": "partial", "groups": 1, "indices": [0]}, "exactly one of"),
        ({"mode": "full", "groups": 1}, "only apply to mode=partial"),
        ({"mode": "none", "indices": [1]}, "only apply to mode=partial"),
        ({"mode": "partly"}, "vision.tiny_vit.freeze.mode"),
    ],
)
def test_invalid_freeze_configs(freeze: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfg(vision_freeze=freeze)


def test_out_of_range_index_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"freeze.indices has 4 but the tower has only 4 layer groups"):
        build_model(cfg(vision_freeze={"mode": "partial", "indices": [4]}))


def test_full_freeze_with_train_norms_is_rejected() -> None:
    with pytest.raises(ValueError, match="train_norms applies to mode=partial"):
        build_model(cfg(vision_freeze={"mode": "full", "train_norms": True}))


def test_frozen_parameters_get_no_gradient() -> None:
    model = build_model(cfg(vision_freeze={"mode": "partial", "groups": 2}, text=None))
    out = model({"pixel_values": torch.randn(2, 3, 16, 16)})
    out["image_embeds"].sum().backward()
    assert model.vision.embed.proj.weight.grad is None
    assert model.vision.blocks[0].attn.in_proj_weight.grad is None
    assert model.vision.blocks[1].attn.in_proj_weight.grad is not None
