"""DualEncoder contract (docs/DESIGN.md "Model"): outputs, encode_*, logit scale, save/load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from medvl.config.loading import ConfigError, config_from_dict
from medvl.config.model import ModelConfig
from medvl.models import DualEncoder, build_model

CORPUS = [
    "small left pleural effusion",
    "no acute cardiopulmonary process",
    "cardiomegaly with mild pulmonary edema",
    "right lower lobe consolidation",
    "normal chest radiograph",
] * 2


def tiny_cfg(**overrides: object) -> ModelConfig:
    data: dict[str, object] = {
        "embed_dim": 16,
        "vision": {
            "kind": "tiny_vit",
            "image_size": 16,
            "patch_size": 4,
            "width": 32,
            "depth": 2,
            "heads": 2,
        },
        "text": {
            "kind": "tiny_text",
            "vocab_size": 128,
            "width": 32,
            "depth": 1,
            "heads": 2,
            "max_length": 16,
        },
    }
    data.update(overrides)
    return config_from_dict(data, ModelConfig)


def make_model(**overrides: object) -> DualEncoder:
    model = build_model(tiny_cfg(**overrides))
    model.train_tokenizer(CORPUS)
    return model


def batch(n: int = 3) -> dict[str, object]:
    return {
        "ids": [f"r{i}" for i in range(n)],
        "index": torch.arange(n),
        "pixel_values": torch.randn(n, 3, 16, 16),
        "texts": CORPUS[:n],
        "labels": {},
        "label_mask": {},
    }


def test_forward_outputs_follow_the_contract() -> None:
    model = make_model(
        classifiers={"finding": {"kind": "multilabel", "num_classes": 4}, "isup": {"kind": "ordinal"}},
        vision_projection_2={"kind": "linear"},
        prototype={"task": "finding", "num_classes": 4, "input": "image_embeds_2"},
        logit_bias={"init": -10.0},
    )
    out = model(batch(3))
    assert out["image_features"].shape == (3, 32)
    assert out["image_embeds"].shape == (3, 16)
    assert out["image_embeds_2"].shape == (3, 16)
    assert out["text_features"].shape == (3, 32)
    assert out["text_embeds"].shape == (3, 16)
    assert out["logits.finding"].shape == (3, 4)
    assert out["logits.isup"].shape == (3,)
    assert out["prototype_logits.finding"].shape == (3, 4)
    assert out["prototypes.finding"].shape == (4, 16)
    assert out["logit_scale"].ndim == 0
    assert out["logit_bias"].item() == pytest.approx(-10.0)
    # embeddings are not normalised by the model (callers normalise where the method says so)
    assert not torch.allclose(out["image_embeds"].norm(dim=-1), torch.ones(3))


def test_encode_image_and_text_match_forward() -> None:
    model = make_model().eval()
    b = batch(2)
    out = model(b)
    torch.testing.assert_close(model.encode_image(b), out["image_embeds"])
    torch.testing.assert_close(model.encode_image(b["pixel_values"]), out["image_embeds"])  # type: ignore[arg-type]
    torch.testing.assert_close(model.encode_text(b["texts"]), out["text_embeds"])  # type: ignore[arg-type]
    tokens = model.tokenize(b["texts"])  # type: ignore[arg-type]
    assert set(tokens) == {"input_ids", "attention_mask"}
    torch.testing.assert_close(model.encode_text(tokens), out["text_embeds"])


def test_logit_scale_init_clamp_and_gradient() -> None:
    # CLIP init: log scale = ln(1/0.07) (Radford et al. 2021; open_clip model.py)
    model = make_model()
    assert model.logit_scale.log_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    assert model.logit_scale.log_scale.requires_grad
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "logit_scale.log_scale" in names  # the optimizer sees the temperature (A.9 bug)
    with torch.no_grad():
        model.logit_scale.log_scale.fill_(10.0)
    model.clamp_()
    assert model.logit_scale().item() == pytest.approx(100.0, rel=1e-5)  # default max ln 100
    with torch.no_grad():
        model.logit_scale.log_scale.fill_(-3.0)
    model.clamp_()
    assert model.logit_scale().item() == pytest.approx(1.0)
    out = model(batch(2))
    out["logit_scale"].backward()
    assert model.logit_scale.log_scale.grad is not None


def test_fixed_temperature_and_invalid_init() -> None:
    model = make_model(logit_scale={"init_temperature": 0.1, "learnable": False})
    assert not model.logit_scale.log_scale.requires_grad
    assert model.logit_scale().item() == pytest.approx(10.0)
    with pytest.raises(ConfigError, match="max_scale"):
        tiny_cfg(logit_scale={"init_temperature": 0.001})


def test_prototype_head_uses_its_own_scale_and_cosine() -> None:
    model = make_model(prototype={"task": "finding", "num_classes": 3, "scale": {"init_temperature": 0.5}})
    model.eval()
    out = model(batch(2))
    assert out["logit_scale_2"].item() == pytest.approx(2.0)
    assert model.prototype is not None
    cos = (
        torch.nn.functional.normalize(out["image_embeds"], dim=-1)
        @ torch.nn.functional.normalize(model.prototype.prototypes, dim=-1).T
    )
    torch.testing.assert_close(out["prototype_logits.finding"], 2.0 * cos)


def test_save_and_load_roundtrip(tmp_path: Path) -> None:
    model = make_model(classifiers={"finding": {"kind": "multiclass", "num_classes": 3}}).eval()
    model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "model.safetensors" in files and "config.json" in files
    loaded = DualEncoder.from_pretrained(tmp_path / "m").eval()
    b = batch(2)
    a, c = model(b), loaded(b)
    for key in ("image_embeds", "text_embeds", "logits.finding", "logit_scale"):
        torch.testing.assert_close(a[key], c[key], rtol=0, atol=0)


def test_load_rejects_other_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        DualEncoder.from_pretrained(tmp_path)


def test_tokenizer_required_and_bad_texts() -> None:
    model = build_model(tiny_cfg())
    assert model.needs_tokenizer_training()
    with pytest.raises(RuntimeError, match="train_tokenizer"):
        model.tokenize(["a"])
    model.train_tokenizer(CORPUS)
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        model.tokenize(["ok", "  "])
    b = batch(2)
    b["texts"] = ["fine", ""]
    with pytest.raises(ValueError, match="r0"):  # names the batch ids
        model(b)


def test_image_only_model_and_identity_projection() -> None:
    model = build_model(tiny_cfg(text=None, vision_projection={"kind": "identity"}))
    out = model(batch(2))
    assert "text_embeds" not in out
    torch.testing.assert_close(out["image_embeds"], out["image_features"])
    with pytest.raises(ValueError, match="feature_dim must match"):
        build_model(
            tiny_cfg(vision_projection={"kind": "identity"}, text_projection={"kind": "linear"}, embed_dim=8)
        )


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"vision\.tiny_vit\.depht"):
        tiny_cfg(vision={"kind": "tiny_vit", "depht": 3})
