"""The training loop end to end on a tiny model (CPU, deterministic)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from _training_tiny import KillAfter, TinyDataset, TinyDual, TinyObjective, collate, tiny_config, weights

from medvl.training import Callback, NonFiniteLossError, Trainer
from medvl.training.callbacks import ValidationContext
from medvl.training.logging import read_jsonl
from medvl.training.sampler import ResumableSampler


def _fit(run_dir: Path, cfg: Any, *, model: TinyDual | None = None, objective: TinyObjective | None = None,
         n: int = 20, resume: bool = False, callbacks: tuple[Callback, ...] = (), hooks: Any = None,
         seed: int = 0) -> tuple[TinyDual, Any]:
    torch.manual_seed(1)
    model = model or TinyDual()
    objective = objective or TinyObjective()
    trainer = Trainer(cfg, run_dir, seed=seed, callbacks=callbacks, validation_hooks=hooks)
    result = trainer.fit(model, objective, TinyDataset(n), TinyDataset(8, seed=1), collate_fn=collate,
                         resume=resume)
    return model, (trainer, result)


def test_fit_logs_every_term_and_temperature_is_trained(tmp_path: Path) -> None:
    model, (trainer, result) = _fit(tmp_path, tiny_config())
    assert result.status == "completed"
    # temperature is in the optimizer, in a no-weight-decay group, and it moved
    assert trainer.param_groups.group_of("model.logit_scale").startswith("no_decay")
    assert trainer.param_groups.group_of("model.vision.1.weight").startswith("no_decay")  # LayerNorm
    assert trainer.param_groups.group_of("model.vision.0.weight") == "decay"
    assert float(model.logit_scale.detach()) != pytest.approx(float(torch.log(torch.tensor(1 / 0.07))), abs=1e-6)
    steps = read_jsonl(tmp_path / "logs" / "steps.jsonl")
    assert {"train/loss", "train/clip", "train/ce", "lr", "samples_per_s"} <= set(steps[0])
    epochs = read_jsonl(tmp_path / "logs" / "epochs.jsonl")
    assert [r["epoch"] for r in epochs] == [0, 1, 2]  # epoch 0 = baseline before any update
    assert "train/loss" not in epochs[0] and "val/loss" in epochs[0]
    assert {"train/loss", "train/clip", "train/ce", "val/loss", "val/clip", "val/ce"} <= set(epochs[1])
    header = (tmp_path / "logs" / "epochs.csv").read_text().splitlines()[0].split(",")
    assert "val/ce" in header and "train/clip" in header
    info = json.loads((tmp_path / "training_result.json").read_text())
    assert info["status"] == "completed" and info["total_steps"] == 10


def test_scheduler_is_sized_to_real_optimizer_steps(tmp_path: Path) -> None:
    # 20 samples, batch 4 → 5 micro-batches; accumulate 2 → 3 optimizer steps per epoch (last group partial)
    cfg = tiny_config(epochs=3, accumulate_grad_batches=2, schedule={"kind": "cosine", "warmup_steps": 1,
                                                                      "min_lr_ratio": 0.1})
    _, (trainer, result) = _fit(tmp_path, cfg)
    assert trainer.steps_per_epoch == 3 and result.global_step == 9
    assert trainer.scheduler.last_epoch == 9
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "logs" / "steps.jsonl")]
    assert len(lrs) == 9
    assert lrs[0] == pytest.approx(1e-2)  # after 1 warm-up step: the peak
    assert lrs[-1] == pytest.approx(1e-3)  # last step reaches min_lr_ratio · lr exactly
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def _manual_reference(cfg: Any, epochs: int, n: int = 20) -> TinyDual:
    """A hand-written loop: AdamW groups, sample-weighted accumulation, step on the partial group, zero at epoch start."""
    from medvl.training.optim import build_optimizer, build_scheduler
    from medvl.training.task import TrainTask
    from medvl.utils.seeding import seed_everything

    torch.manual_seed(1)
    model, objective = TinyDual(dropout=0.0), TinyObjective()
    task = TrainTask(model, objective)
    optimizer, _ = build_optimizer(task, cfg.optimizer)
    scheduler, _ = build_scheduler(optimizer, cfg.schedule, steps_per_epoch=3, epochs=epochs)
    seed_everything(0)
    data = TinyDataset(n)
    sampler = ResumableSampler(n, seed=0)
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        order = sampler.epoch_indices()
        batches = [order[i:i + 4] for i in range(0, n, 4)]
        for g in range(0, len(batches), 2):
            group = batches[g:g + 2]
            total = sum(len(b) for b in group)
            for idx in group:
                batch = collate([data[i] for i in idx])
                _, losses = task(batch)
                (losses["total"] * len(idx) / total).backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            model.clamp_logit_scale()
    return model


def test_accumulation_steps_on_partial_group_and_matches_hand_loop(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=2, accumulate_grad_batches=2, validate_at_start=False)
    model, (_, result) = _fit(tmp_path, cfg, model=_no_dropout())
    assert result.global_step == 6
    reference = _manual_reference(cfg, epochs=2)
    for name, value in weights(reference).items():
        torch.testing.assert_close(weights(model)[name], value, rtol=1e-5, atol=1e-6, msg=name)


def _no_dropout() -> TinyDual:
    torch.manual_seed(1)
    return TinyDual(dropout=0.0)


class GradSpy(Callback):
    """Records whether any gradient is left when an epoch starts (checked at the first step's end)."""

    def __init__(self) -> None:
        self.leftover: list[bool] = []

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        self.leftover.append(any(p.grad is not None for p in trainer.task.parameters()))


def test_no_gradient_survives_an_epoch(tmp_path: Path) -> None:
    spy = GradSpy()
    _fit(tmp_path, tiny_config(accumulate_grad_batches=3), callbacks=(spy,))
    assert spy.leftover == [False, False, False]


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=2, accumulate_grad_batches=2, checkpoint={"every_n_steps": 1})
    full, _ = _fit(tmp_path / "full", cfg)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", cfg, callbacks=(KillAfter(5),))  # 3 steps per epoch
    last = json.loads((tmp_path / "killed" / "checkpoints" / "last.json").read_text())
    # step 5 is lost (the kill came before its checkpoint); step 4 is mid epoch 2 (after micro-batch 2 of 5)
    assert last["global_step"] == 4 and last["epoch"] == 2
    resumed, (_, result) = _fit(tmp_path / "killed", cfg, resume=True)
    assert result.global_step == 6
    for name, value in weights(full).items():
        assert torch.equal(weights(resumed)[name], value), name
    full_log = read_jsonl(tmp_path / "full" / "logs" / "steps.jsonl")
    resumed_log = read_jsonl(tmp_path / "killed" / "logs" / "steps.jsonl")
    assert [r["train/loss"] for r in full_log] == [r["train/loss"] for r in resumed_log]
    strip = lambda rs: [{k: v for k, v in r.items() if "time" not in k} for r in rs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "full" / "logs" / "epochs.jsonl")) == \
        strip(read_jsonl(tmp_path / "killed" / "logs" / "epochs.jsonl"))


def test_nan_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=3, checkpoint={"every_n_steps": 2})
    model = _no_dropout()
    # forward calls: baseline val (2 batches of 4), 5 batches of epoch 1, val (2), then the 3rd batch of epoch 2
    model.poison_at_call = 2 + 5 + 2 + 3
    with pytest.raises(NonFiniteLossError) as info:
        _fit(tmp_path, cfg, model=model)
    message = str(info.value)
    assert "epoch 2, optimizer step 8" in message
    assert "total=nan" in message and "clip=nan" in message and "ce=nan" in message
    assert info.value.step == 8
    last = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert last["global_step"] == 6  # every 2 steps: step 6 (epoch 2) is the last one before the NaN
    ckpt = tmp_path / "checkpoints" / last["dir"]
    assert str(ckpt) in message
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no update applied with NaN grads
    result = json.loads((tmp_path / "training_result.json").read_text())
    assert result["status"] == "non_finite_loss" and "step 8" in result["message"]


def test_early_stopping_and_best_checkpoint(tmp_path: Path) -> None:
    scores = {0: 0.5, 1: 0.7, 2: 0.6, 3: 0.6, 4: 0.9, 5: 0.9}
    seen_modes: list[bool] = []

    def hook(ctx: ValidationContext) -> dict[str, float]:
        seen_modes.append(ctx.model.training)
        return {"retrieval/R@1": scores[ctx.epoch]}

    cfg = tiny_config(epochs=5, early_stopping={"enabled": True, "metric": "val/retrieval/R@1", "mode": "max",
                                                "patience": 2, "min_epochs": 1})
    _, (_, result) = _fit(tmp_path, cfg, hooks=[hook])
    assert result.status == "early_stopped" and result.epochs_completed == 3
    assert result.best["epoch"] == 1 and result.best["value"] == 0.7
    assert seen_modes == [False] * 4  # validation runs in eval mode (no dropout / augmentation)
    best_dir = tmp_path / "checkpoints" / result.best["dir"]
    assert (best_dir / "model.safetensors").is_file()


def test_baseline_validation_sees_untrained_weights(tmp_path: Path) -> None:
    torch.manual_seed(1)
    initial = weights(TinyDual())
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def hook(ctx: ValidationContext) -> dict[str, float]:
        snapshots[ctx.epoch] = weights(ctx.model)
        return {}

    _fit(tmp_path, tiny_config(epochs=1), hooks=[hook])
    assert all(torch.equal(snapshots[0][k], v) for k, v in initial.items())
    assert not all(torch.equal(snapshots[1][k], v) for k, v in initial.items())


def test_checkpoints_hold_no_pickle(tmp_path: Path) -> None:
    _fit(tmp_path, tiny_config(epochs=1))
    files = [p for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()]
    assert files and all(p.suffix in {".safetensors", ".json"} for p in files)


def test_bf16_autocast_clipping_and_tensorboard(tmp_path: Path) -> None:
    class AutocastSpy(TinyObjective):
        seen: ClassVar[list[bool]] = []

        def forward(self, outputs: Any, batch: Any) -> dict[str, torch.Tensor]:
            self.seen.append(torch.is_autocast_enabled("cpu") and outputs["logits.cls"].dtype == torch.bfloat16)
            return super().forward(outputs, batch)

    cfg = tiny_config(epochs=1, precision="bf16-mixed", grad_clip_norm=0.5,
                      logging={"every_n_steps": 1, "tensorboard": True, "progress_bar": False})
    spy = AutocastSpy()
    _, (_, result) = _fit(tmp_path, cfg, objective=spy)
    assert result.status == "completed" and spy.seen and all(spy.seen)  # training and validation under bf16
    steps = read_jsonl(tmp_path / "logs" / "steps.jsonl")
    assert all(r["grad_norm"] > 0 for r in steps)  # measured before clipping, logged every step
    assert any((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_with_more_epochs_resizes_the_schedule(tmp_path: Path) -> None:
    sched = {"kind": "cosine", "warmup_steps": 0, "min_lr_ratio": 0.1}
    _, (_, first) = _fit(tmp_path, tiny_config(epochs=1, schedule=sched))
    assert first.global_step == 5
    _, (trainer, result) = _fit(tmp_path, tiny_config(epochs=3, schedule=sched), resume=True)
    assert result.global_step == 15 and trainer.schedule.total_steps == 15
    lrs = [r["lr"] for r in read_jsonl(tmp_path / "logs" / "steps.jsonl")]
    assert len(lrs) == 15 and lrs[-1] == pytest.approx(1e-3)  # the new curve ends at min_lr_ratio · lr
    assert lrs[5] > lrs[4]  # epoch 1 ran on the 1-epoch curve; step 6 continues on the 3-epoch curve


def test_resume_after_early_stop_does_not_train_again(tmp_path: Path) -> None:
    def hook(ctx: ValidationContext) -> dict[str, float]:
        return {"score": 1.0}  # never improves after epoch 0

    cfg = tiny_config(epochs=6, early_stopping={"enabled": True, "metric": "val/score", "patience": 1})
    _, (_, result) = _fit(tmp_path, cfg, hooks=[hook])
    assert result.status == "early_stopped" and result.global_step == 5
    _, (_, again) = _fit(tmp_path, cfg, hooks=[hook], resume=True)
    assert again.status == "early_stopped" and again.global_step == 5
