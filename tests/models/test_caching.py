"""Frozen-tower caching gives the same losses and gradients as recomputation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medvl.config.loading import ConfigError, config_from_dict
from medvl.config.model import ModelConfig
from medvl.models import DualEncoder, FeatureCache, build_model

TEXTS = [
    "small left pleural effusion",
    "no acute cardiopulmonary process",
    "cardiomegaly with mild pulmonary edema and a long trailing description of the heart",
    "right lower lobe consolidation",
    "normal chest radiograph",
    "stable postoperative appearance",
]


def text_frozen_model(cache: str = "auto") -> DualEncoder:
    data = {
        "embed_dim": 8,
        "vision": {"kind": "tiny_cnn", "widths": [4, 8]},
        "text": {
            "kind": "tiny_text",
            "vocab_size": 96,
            "width": 16,
            "depth": 1,
            "heads": 2,
            "max_length": 24,
            "dropout": 0.1,  # would make recomputation random if the frozen tower were not in eval mode
            "freeze": {"mode": "full"},
            "cache": cache,
        },
    }
    model = build_model(config_from_dict(data, ModelConfig))
    model.train_tokenizer(TEXTS)
    return model


def clip_loss(out: dict[str, torch.Tensor]) -> torch.Tensor:
    img = F.normalize(out["image_embeds"], dim=-1)
    txt = F.normalize(out["text_embeds"], dim=-1)
    logits = out["logit_scale"] * img @ txt.T
    target = torch.arange(len(img))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def run(model: DualEncoder, images: torch.Tensor, lambdas: list[float], epochs: int) -> list[float]:
    """Two epochs of shuffled batches for each λ; returns every loss value."""
    losses = []
    for lam in lambdas:
        for epoch in range(epochs):
            order = torch.randperm(len(TEXTS), generator=torch.Generator().manual_seed(epoch))
            for chunk in order.split(3):
                batch = {
                    "ids": [f"r{i}" for i in chunk.tolist()],
                    "pixel_values": images[chunk],
                    "texts": [TEXTS[i] for i in chunk.tolist()],
                }
                out = model(batch)
                loss = lam * clip_loss(out) + (1 - lam) * out["image_embeds"].pow(2).mean()
                model.zero_grad()
                loss.backward()
                losses.append(loss.item())
    return losses


def test_cached_text_features_equal_recomputation() -> None:
    cached = text_frozen_model("auto")
    uncached = text_frozen_model("off")
    uncached.load_state_dict(copy.deepcopy(cached.state_dict()))
    uncached.text.tokenizer = cached.text.tokenizer  # type: ignore[union-attr]
    assert cached.text_cache is not None and uncached.text_cache is None
    images = torch.randn(len(TEXTS), 3, 8, 8)
    torch.manual_seed(1)
    a = run(cached, images, lambdas=[0.3, 1.0], epochs=2)
    torch.manual_seed(1)
    b = run(uncached, images, lambdas=[0.3, 1.0], epochs=2)
    torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-6, atol=1e-6)
    stats = cached.feature_cache_stats()["text"]
    assert stats["entries"] == len(TEXTS)
    assert stats["misses"] == len(TEXTS)  # each text computed once, for all epochs and λ values
    assert stats["hits"] == 2 * 2 * len(TEXTS) - len(TEXTS)


def test_cached_tower_is_not_run_again() -> None:
    model = text_frozen_model()
    calls = []
    model.text.register_forward_hook(lambda *_: calls.append(1))  # type: ignore[union-attr]
    model.encode_text(TEXTS[:3])
    model.encode_text(TEXTS[:3])
    model.encode_text(list(reversed(TEXTS[:3])))
    assert len(calls) == 1
    # projection stays trainable and receives gradient through cached features
    model.encode_text(TEXTS[:3]).sum().backward()
    assert model.text_projection is not None and model.text_projection.weight.grad is not None  # type: ignore[union-attr]


def test_cache_cleared_on_load_state_dict() -> None:
    model = text_frozen_model()
    model.encode_text(TEXTS[:2])
    assert model.text_cache is not None and len(model.text_cache) == 2
    model.load_state_dict(model.state_dict())
    assert len(model.text_cache) == 0


def test_trainable_text_tower_is_not_cached() -> None:
    data = {
        "embed_dim": 8,
        "vision": {"kind": "tiny_cnn", "widths": [4]},
        "text": {"kind": "tiny_text", "vocab_size": 96},
    }
    assert build_model(config_from_dict(data, ModelConfig)).text_cache is None


def test_cache_on_requires_full_freeze() -> None:
    with pytest.raises(ConfigError, match=r"cache=on needs freeze\.mode=full"):
        config_from_dict({"vision": {"kind": "tiny_cnn", "cache": "on"}}, ModelConfig)


def test_image_cache_keyed_by_record_id_for_frozen_slide_encoder() -> None:
    data = {
        "embed_dim": 8,
        "text": None,
        "vision": {
            "kind": "slide",
            "input_dim": 6,
            "width": 12,
            "heads": 3,
            "freeze": {"mode": "full"},
            "cache": "on",
        },
    }
    model = build_model(config_from_dict(data, ModelConfig))
    bag, mask = torch.randn(3, 5, 6), torch.ones(3, 5, dtype=torch.bool)
    mask[1, 3:] = False
    batch = {"ids": ["a", "b", "c"], "bag": bag, "bag_mask": mask}
    first = model(batch)["image_embeds"]
    again = model({"ids": ["c", "a"], "bag": bag[[2, 0]], "bag_mask": mask[[2, 0]]})["image_embeds"]
    torch.testing.assert_close(again, first[[2, 0]], rtol=0, atol=0)
    assert model.feature_cache_stats()["image"] == {"hits": 2, "misses": 3, "entries": 3}


def test_feature_cache_limit_and_namespaces() -> None:
    cache = FeatureCache(max_entries=2)
    device = torch.device("cpu")
    out = cache.get_or_compute(["a", "b", "c"], lambda: torch.arange(6.0).view(3, 2), device)
    assert out.shape == (3, 2) and len(cache) == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a separate namespace: nothing cached yet
        calls = []
        cache.get_or_compute(["a"], lambda: calls.append(1) or torch.zeros(1, 2), device)
    assert calls == [1]
    with pytest.raises(ValueError, match="shape"):
        cache.get_or_compute(["x", "y"], lambda: torch.zeros(3, 2), device)


def test_cache_save_load_round_trip_and_fingerprint_guard(tmp_path: Path) -> None:
    """Features saved by one run are reused by another only when the tower weights are identical."""
    from medvl.models.caching import FeatureCache, module_fingerprint

    tower = torch.nn.Linear(3, 4)
    cache = FeatureCache()
    calls = {"n": 0}

    def compute() -> torch.Tensor:
        calls["n"] += 1
        return tower(torch.ones(2, 3))

    first = cache.get_or_compute(["a", "b"], compute, torch.device("cpu"))
    fingerprint = module_fingerprint(tower)
    assert cache.save(tmp_path / "text.safetensors", fingerprint) == 2
    other = FeatureCache()
    assert other.load(tmp_path / "text.safetensors", fingerprint) == 2
    again = other.get_or_compute(["a", "b"], compute, torch.device("cpu"))
    assert calls["n"] == 1 and torch.equal(first.detach(), again)
    with torch.no_grad():
        tower.weight.add_(1.0)
    assert module_fingerprint(tower) != fingerprint
    assert FeatureCache().load(tmp_path / "text.safetensors", module_fingerprint(tower)) == 0
    assert FeatureCache().load(tmp_path / "missing.safetensors", fingerprint) == 0
