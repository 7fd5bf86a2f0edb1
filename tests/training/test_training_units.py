"""Units of the engine: parameter groups, schedules, sampler, checkpoint I/O, early stopping, config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _training_tiny import TinyDual
from torch import nn

from medvl.config.loading import ConfigError, config_from_dict
from medvl.config.training import OptimizerConfig, RunConfig, ScheduleConfig, TrainConfig
from medvl.training.callbacks import EarlyStopping
from medvl.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_optimizer_state,
    optimizer_state_tensors,
    resolve_checkpoint,
)
from medvl.training.optim import LRSchedule, build_optimizer, build_param_groups, build_scheduler
from medvl.training.rng import capture_rng_state, restore_rng_state
from medvl.training.sampler import BatchShardSampler, ResumableSampler, ShardSampler


def test_param_groups_exclude_norms_biases_temperature_and_frozen() -> None:
    model = TinyDual()
    model.text.weight.requires_grad_(False)
    groups, summary = build_param_groups(model, OptimizerConfig(weight_decay=0.1, lr_multipliers={"vision": 0.5}))
    assert summary.frozen == ["text.weight"]
    assert summary.group_of("logit_scale") == "no_decay"
    assert summary.group_of("vision.1.weight") == "no_decay@vision"  # LayerNorm weight (1-d)
    assert summary.group_of("vision.0.bias") == "no_decay@vision"
    assert summary.group_of("vision.0.weight") == "decay@vision"
    assert summary.group_of("classifier.weight") == "decay"
    by_name = {g["group_name"]: g for g in groups}
    assert by_name["decay@vision"]["lr"] == pytest.approx(0.5e-4) and by_name["decay"]["weight_decay"] == 0.1
    assert by_name["no_decay"]["weight_decay"] == 0.0


def test_declared_no_weight_decay_names_are_honoured() -> None:
    class WithEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(4, 3))
            self.proj = nn.Linear(3, 3)

        def no_weight_decay_names(self) -> set[str]:
            return {"pos_embed"}

    outer = nn.Module()
    outer.model = WithEmbedding()
    _, summary = build_param_groups(outer, OptimizerConfig())
    assert summary.group_of("model.pos_embed") == "no_decay" and summary.group_of("model.proj.weight") == "decay"


def test_everything_frozen_is_an_error() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, OptimizerConfig())


def test_schedules() -> None:
    cosine = LRSchedule("cosine", total_steps=12, warmup_steps=1, steps_per_epoch=12, min_lr_ratio=0.1)
    assert cosine(0) == 1.0 and cosine(1) == 1.0  # end of warm-up = start of the decay
    assert cosine(11) == pytest.approx(0.1)  # the last step (index total-1) reaches min_lr_ratio
    assert cosine(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway
    warm = LRSchedule("constant", total_steps=10, warmup_steps=4, steps_per_epoch=5)
    assert [warm(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    step = LRSchedule("step", total_steps=20, warmup_steps=0, steps_per_epoch=3, step_epochs=2, gamma=0.5)
    assert [step(s) for s in (0, 5, 6, 11, 12)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler, schedule = build_scheduler(optimizer, ScheduleConfig(kind="cosine", warmup_epochs=0.5),
                                          steps_per_epoch=4, epochs=3)
    assert schedule.total_steps == 12 and schedule.warmup_steps == 2
    assert "lr_lambdas" in scheduler.state_dict()


def test_sampler_resumes_mid_epoch_and_shards_without_overlap() -> None:
    full = ResumableSampler(10, seed=3)
    full.set_epoch(2)
    order = list(full)
    again = ResumableSampler(10, seed=3)
    again.load_state_dict({**full.state_dict(), "start": 4})
    assert list(again) == order[4:]
    full.set_epoch(3)
    assert list(full) != order  # a new permutation every epoch
    shards = [ResumableSampler(10, seed=3, num_replicas=3, rank=r) for r in range(3)]
    for s in shards:
        s.set_epoch(2)
    dealt = [i for s in shards for i in s]
    assert len(dealt) == 12 and set(dealt) == set(range(10))  # padded by wrap-around to 4 per replica
    other = ResumableSampler(10, num_replicas=2)
    with pytest.raises(ValueError, match="num_replicas"):
        other.load_state_dict(full.state_dict())
    assert list(ShardSampler(5, num_replicas=2, rank=1)) == [1, 3]


def test_validation_batches_are_the_single_process_batches_dealt_whole() -> None:
    # 17 records, batch 8, 2 processes: process 0 gets batches [0-7] and [16], process 1 gets [8-15]
    one = list(BatchShardSampler(17, 8))
    assert [len(b) for b in one] == [8, 8, 1]
    shards = [list(BatchShardSampler(17, 8, num_replicas=2, rank=r)) for r in range(2)]
    assert shards[0] == [one[0], one[2]] and shards[1] == [one[1]]
    assert list(BatchShardSampler(3, 8, num_replicas=2, rank=1)) == []  # a process may get no batch


def test_rng_roundtrip() -> None:
    import random

    import numpy as np

    state = capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(*state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_optimizer_state_roundtrip_is_exact() -> None:
    model = TinyDual()
    optimizer, _ = build_optimizer(model, OptimizerConfig())
    model(_batch()).get("image_embeds").sum().backward()
    optimizer.step()
    json_part, tensors = optimizer_state_tensors(optimizer)
    fresh = TinyDual()
    other, _ = build_optimizer(fresh, OptimizerConfig())
    load_optimizer_state(other, json_part, tensors)
    for (ka, va), (kb, vb) in zip(optimizer.state_dict()["state"].items(), other.state_dict()["state"].items(),
                                  strict=True):
        assert ka == kb and all(torch.equal(va[k], vb[k]) for k in va)


def _batch() -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(3, 8), "text_vectors": torch.randn(3, 6)}


def test_checkpoint_manager_pointers_and_pruning(tmp_path: Path) -> None:
    model = TinyDual()
    optimizer, _ = build_optimizer(model, OptimizerConfig())
    manager = CheckpointManager(tmp_path)
    save = lambda step, best=None: manager.save(  # noqa: E731
        epoch=1, global_step=step, model=model, objective=None, optimizer=optimizer,
        state={"step": step}, rng=capture_rng_state(), best=best)
    save(1, {"metric": "val/loss", "value": 1.0, "epoch": 1})
    save(2)
    save(3)
    dirs = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert dirs == ["step-00000001-e1", "step-00000003-e1"]  # best and last kept, step 2 pruned
    assert resolve_checkpoint(tmp_path, "best").name == "step-00000001-e1"
    assert resolve_checkpoint(tmp_path, "last").name == "step-00000003-e1"
    with torch.no_grad():
        model.logit_scale.fill_(1.234)
    save(3)  # the same step again (after a resume) goes to a new directory, never over an old one
    assert resolve_checkpoint(tmp_path, "last").name == "step-00000003-e1.1"
    target = TinyDual()
    payload, rng = CheckpointManager(tmp_path).load("last", model=target, objective=None, optimizer=None)
    assert payload["trainer"] == {"step": 3} and rng is not None
    assert float(target.logit_scale.detach()) == pytest.approx(1.234)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    model = TinyDual()
    optimizer, _ = build_optimizer(model, OptimizerConfig())
    CheckpointManager(tmp_path).save(epoch=0, global_step=0, model=model, objective=None, optimizer=optimizer,
                                     state={}, rng=capture_rng_state())
    with pytest.raises(CheckpointError, match="weights do not fit"):
        CheckpointManager(tmp_path).load("last", model=TinyDual(dim=5), objective=None, optimizer=None)


def test_early_stopping_rules() -> None:
    stop = EarlyStopping("val/auc", mode="max", patience=2, min_epochs=4, min_delta=0.01)
    seq = [0.5, 0.6, 0.605, 0.6, 0.59, 0.7]
    flags = []
    for epoch, value in enumerate(seq):
        stop.update(epoch, {"val/auc": value})
        flags.append(stop.should_stop)
    # 0.605 is not > 0.6 + 0.01; after two bad validations (epochs 2, 3) min_epochs=4 still holds it back
    assert flags == [False, False, False, False, True, False]
    assert stop.best == 0.7 and stop.best_epoch == 5
    assert not stop.improved(float("nan"))
    with pytest.raises(KeyError, match="val/auc"):
        stop.update(6, {"val/loss": 1.0})


def test_config_errors_name_the_key() -> None:
    with pytest.raises(Exception, match="precision"):
        TrainConfig.model_validate({"precision": "8"})
    with pytest.raises(ConfigError, match=r"training\.optimzer: unknown key"):
        config_from_dict({"data": {"manifest": "m.parquet"}, "model": {}, "objective": {},
                          "training": {"optimzer": {}}}, RunConfig)
    cfg = TrainConfig(early_stopping={"metric": "val/auc", "mode": "max"})
    assert cfg.monitor == "val/auc" and cfg.monitor_mode == "max"
