"""``training.ema`` (validation and evaluation on averaged weights, exact resume) and ``training.compile``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import safetensors.torch as st
import torch
from _training_tiny import (
    KillAfter,
    TinyDataset,
    TinyDual,
    TinyObjective,
    assert_same_last_checkpoint,
    collate,
    tiny_config,
    weights,
)

from medvl.models.weights import evaluation_weights
from medvl.training import Callback, Trainer
from medvl.training.callbacks import ObjectiveValidation, ValidationContext
from medvl.training.checkpoint import resolve_checkpoint
from medvl.training.logging import read_jsonl

DECAY = 0.6


class Steps(Callback):
    """Training weights after every optimizer step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        self.states.append(weights(trainer.model))


class SeenWeights:
    """A validation hook that records the weights the model has while it validates."""

    def __init__(self) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, ctx: ValidationContext) -> dict[str, float]:
        self.seen.append(weights(ctx.model))
        return {}


def _fit(run: Path, *, callbacks: tuple[Any, ...] = (), hooks: Any = None, resume: bool = False, **cfg: Any) -> Any:
    torch.manual_seed(1)
    model = TinyDual(dropout=0.0)
    config = tiny_config(epochs=2, ema={"enabled": True, "decay": DECAY}, checkpoint={"every_n_steps": 2}, **cfg)
    trainer = Trainer(config, run, seed=0, callbacks=callbacks, validation_hooks=hooks)
    trainer.fit(model, TinyObjective(), TinyDataset(20), TinyDataset(8, seed=1), collate_fn=collate, resume=resume)
    return model, trainer


def test_ema_is_the_average_and_validation_and_evaluation_use_it(tmp_path: Path) -> None:
    steps, seen = Steps(), SeenWeights()
    torch.manual_seed(1)
    initial = weights(TinyDual(dropout=0.0))
    _, trainer = _fit(tmp_path, callbacks=(steps,), hooks=[seen, ObjectiveValidation()])
    expected = {k: v.clone() for k, v in initial.items()}
    per_epoch = len(steps.states) // 2
    averages = []
    for state in steps.states:
        for name in expected:
            expected[name] = DECAY * expected[name] + (1 - DECAY) * state[name]
        averages.append({k: v.clone() for k, v in expected.items()})
    saved = st.load_file(str(resolve_checkpoint(tmp_path, "last") / "ema.safetensors"))
    for name, value in averages[-1].items():
        torch.testing.assert_close(saved[name], value, rtol=1e-6, atol=1e-7)
    # validation at the end of epoch 1 saw the average, not the training weights
    for name in ("vision.0.weight", "text.weight"):
        torch.testing.assert_close(seen.seen[1][name], averages[per_epoch - 1][name], rtol=1e-6, atol=1e-7)
        assert not torch.equal(seen.seen[1][name], steps.states[per_epoch - 1][name])
    assert torch.equal(trainer.model.vision[0].weight, steps.states[-1]["vision.0.weight"])  # training weights back
    # evaluation (load_trained_model, evaluate, sweep test metrics, export) reads the average
    assert evaluation_weights(resolve_checkpoint(tmp_path, "best")).name == "ema.safetensors"


def test_ema_resumes_exactly(tmp_path: Path) -> None:
    _fit(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", callbacks=(KillAfter(3),))
    _fit(tmp_path / "killed", resume=True)
    for file in ("ema.safetensors", "model.safetensors"):
        assert_same_last_checkpoint(tmp_path / "full", tmp_path / "killed", file)


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    losses = {}
    for name, compile_cfg in (("eager", {}), ("compiled", {"enabled": True, "backend": "aot_eager"})):
        torch.manual_seed(1)
        cfg = tiny_config(epochs=1, compile=compile_cfg)
        Trainer(cfg, tmp_path / name, seed=0).fit(TinyDual(dropout=0.0), TinyObjective(), TinyDataset(16),
                                                   collate_fn=collate)
        losses[name] = [r["train/loss"] for r in read_jsonl(tmp_path / name / "logs" / "steps.jsonl")]
    assert len(losses["eager"]) == 4
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-5)
