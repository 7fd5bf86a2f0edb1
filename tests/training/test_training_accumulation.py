"""Accumulation: plain and feature-cache (contrastive) modes against one big batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _training_tiny import TinyDataset, TinyDual, TinyObjective, collate, tiny_config, weights

from medvl.training import Trainer
from medvl.training.accumulation import FeatureCacheContext, concat_batches, group_bounds, micro_batch_sizes


def _one_step(tmp: Path, objective: TinyObjective, *, dropout: float = 0.0, **cfg: Any) -> TinyDual:
    torch.manual_seed(3)
    model = TinyDual(dropout=dropout)
    config = tiny_config(epochs=1, validate_at_start=False, schedule={"kind": "constant", "warmup_steps": 0},
                         optimizer={"lr": 0.05, "weight_decay": 0.0}, **cfg)
    result = Trainer(config, tmp, seed=0).fit(model, objective, TinyDataset(8), collate_fn=collate)
    assert result.global_step == 1
    return model


def _objective(**kw: Any) -> TinyObjective:
    torch.manual_seed(5)
    return TinyObjective(**kw)


@pytest.mark.parametrize("projector", [False, True])
def test_feature_cache_accumulation_equals_full_batch(tmp_path: Path, projector: bool) -> None:
    """2 micro-batches of 4 with cached features = one batch of 8 (same negatives, same gradient),
    including the logit scale (not per-sample) and an objective-owned projector."""
    full = _one_step(tmp_path / "full", _objective(projector=projector), batch_size=8)
    cached = _one_step(tmp_path / "cached", _objective(projector=projector), batch_size=4,
                       accumulate_grad_batches=2, contrastive_accumulation=True)
    for name, value in weights(full).items():
        torch.testing.assert_close(weights(cached)[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_plain_accumulation_differs_for_contrastive_but_matches_for_per_sample_losses(tmp_path: Path) -> None:
    # CE only: the mean over 8 samples is the weighted mean of two micro-batch means
    full = _one_step(tmp_path / "a", _objective(w_clip=0.0, w_ce=1.0), batch_size=8)
    plain = _one_step(tmp_path / "b", _objective(w_clip=0.0, w_ce=1.0), batch_size=4, accumulate_grad_batches=2)
    for name, value in weights(full).items():
        torch.testing.assert_close(weights(plain)[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # CLIP: plain accumulation sees 4 negatives per micro-batch, so it is not the 8-sample loss
    full = _one_step(tmp_path / "c", _objective(w_clip=1.0, w_ce=0.0), batch_size=8)
    plain = _one_step(tmp_path / "d", _objective(w_clip=1.0, w_ce=0.0), batch_size=4, accumulate_grad_batches=2)
    assert not torch.allclose(weights(plain)["vision.0.weight"], weights(full)["vision.0.weight"])


class SpyObjective(TinyObjective):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, outputs: Any, batch: Any) -> dict[str, torch.Tensor]:
        self.seen.append(outputs["image_embeds"].detach().clone())
        return super().forward(outputs, batch)


def test_feature_cache_replays_dropout(tmp_path: Path) -> None:
    """The re-forward with gradient draws the same dropout masks as the cached pass."""
    spy = SpyObjective()
    _one_step(tmp_path, spy, dropout=0.5, batch_size=4, accumulate_grad_batches=2, contrastive_accumulation=True)
    assert len(spy.seen) == 2 and spy.seen[0].shape == (8, 4)
    assert torch.equal(spy.seen[0], spy.seen[1])


def test_group_bounds_and_sizes() -> None:
    assert micro_batch_sizes(10, 4, drop_last=False) == [4, 4, 2]
    assert micro_batch_sizes(10, 4, drop_last=True) == [4, 4]
    assert [group_bounds(b, 5, 2) for b in range(5)] == [(0, 2), (0, 2), (2, 4), (2, 4), (4, 5)]


def test_concat_batches_pads_feature_bags_and_joins_lists() -> None:
    a = {"ids": ["a", "b"], "bag": torch.ones(2, 3, 2), "bag_mask": torch.ones(2, 3, dtype=torch.bool),
         "labels": {"t": torch.tensor([0, 1])}, "texts": ["x", "y"]}
    b = {"ids": ["c"], "bag": torch.ones(1, 5, 2), "bag_mask": torch.ones(1, 5, dtype=torch.bool),
         "labels": {"t": torch.tensor([2])}, "texts": ["z"]}
    out = concat_batches([a, b])
    assert out["ids"] == ["a", "b", "c"] and out["texts"] == ["x", "y", "z"]
    assert out["bag"].shape == (3, 5, 2) and out["bag"][0, 3:].abs().sum() == 0
    assert out["bag_mask"][:2, 3:].sum() == 0 and out["bag_mask"][2].all()
    assert out["labels"]["t"].tolist() == [0, 1, 2]


def test_splice_keeps_shared_outputs_differentiable_once() -> None:
    scale = torch.tensor(2.0, requires_grad=True)
    cached = [{"emb": torch.zeros(2, 3), "logit_scale": scale.detach()} for _ in range(2)]
    ctx = FeatureCacheContext(cached, [2, 2], full_batch=None)
    fresh = {"emb": torch.ones(2, 3, requires_grad=True), "logit_scale": scale * 1}
    out0 = ctx.splice(fresh)
    assert out0["emb"][:2].requires_grad and out0["logit_scale"].requires_grad
    ctx.index = 1
    out1 = ctx.splice(fresh)
    assert torch.equal(out1["emb"][2:], torch.ones(2, 3)) and not out1["logit_scale"].requires_grad
