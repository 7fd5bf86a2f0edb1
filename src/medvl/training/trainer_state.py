"""What a :class:`~medvl.training.trainer.Trainer` saves in a checkpoint and how it resumes from one.

A checkpoint (written by :class:`~medvl.training.checkpoint.CheckpointManager`) holds the weights,
the optimizer, every RNG and the trainer's own state (``state.json``'s ``trainer`` entry, built by
:func:`trainer_state`): its :class:`TrainPosition` (epoch, batch within it, optimizer step, the running
epoch sums), the sampler, the scheduler, early stopping and best tracking, the fp16 grad scaler and
the EMA's update count. :func:`restore` puts all of it back so that the resumed run continues exactly
as the uninterrupted one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from medvl.models.weights import EMA_WEIGHTS_FILE
from medvl.training.checkpoint import CheckpointError, load_model_weights
from medvl.training.logging import read_jsonl
from medvl.training.rng import capture_rng_state, restore_rng_state
from medvl.utils.io import read_json, to_jsonable

if TYPE_CHECKING:
    from medvl.training.trainer import Trainer

__all__ = ["TrainPosition", "grad_scaler", "load_weights", "restore", "restore_ema", "save_checkpoint",
           "trainer_state"]


@dataclass
class TrainPosition:
    """Where the training loop stands: ``epoch`` (from 1), the next ``batch`` of it (from 0), the optimizer
    steps taken, and the epoch's running sample-weighted term ``sums`` over ``samples`` samples."""

    epoch: int = 1
    batch: int = 0
    global_step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    samples: float = 0.0


def grad_scaler(fabric: Any) -> Any:
    """The fp16 GradScaler of ``16-mixed`` precision (``None`` otherwise)."""
    precision = getattr(fabric, "_precision", None)
    return getattr(precision, "scaler", None)


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """The trainer's JSON state (``state.json``'s ``trainer`` entry)."""
    pos = trainer.position
    scaler = grad_scaler(trainer.fabric)
    return {
        "epoch": pos.epoch,
        "batch_in_epoch": pos.batch,
        "global_step": pos.global_step,
        "epoch_sums": pos.sums,
        "epoch_samples": pos.samples,
        "n_batches": trainer.n_batches,
        "steps_per_epoch": trainer.steps_per_epoch,
        "sampler": trainer.sampler.state_dict(),
        "scheduler": to_jsonable(trainer.scheduler.state_dict()),
        "early_stopping": trainer.early_stopping.state_dict(),
        "best_tracker": trainer.best_tracker.state_dict(),
        "seed": trainer.seed,
        "grad_scaler": to_jsonable(scaler.state_dict()) if scaler is not None else None,
        "ema_updates": trainer.ema.updates if trainer.ema is not None else None,
    }


def save_checkpoint(trainer: Trainer, epoch: int, best: dict[str, Any] | None) -> None:
    """Write a checkpoint of the trainer's current state (``best``: this one becomes the best)."""
    trainer.phase = "a checkpoint"
    states: dict[str, Any] = {}
    if trainer.sharded:  # gathered on every process, written by process 0
        from medvl.training.sharding import full_state_dict

        states = {"model_state": full_state_dict(trainer.model),
                  "objective_state": full_state_dict(trainer.objective)}
    saved = trainer.checkpoints.save(
        epoch=epoch,
        global_step=trainer.position.global_step,
        model=trainer.model,
        objective=trainer.objective,
        optimizer=trainer.optimizer,
        state=trainer_state(trainer),
        rng=capture_rng_state(),
        best=best,
        extra_tensors={EMA_WEIGHTS_FILE: trainer.ema.state_tensors()} if trainer.ema is not None else None,
        **states,
    )
    trainer.last_checkpoint = str(saved.path)


def load_weights(module: nn.Module, file: Path, *, sharded: bool, allow_missing: bool = False) -> list[str]:
    """Load a weights file into ``module`` (into its shards when ``sharded``); returns the parameters it lacked."""
    if not sharded:
        return load_model_weights(module, file, allow_missing=allow_missing)
    import safetensors.torch as st

    from medvl.training.sharding import load_full_state_dict

    if allow_missing:
        raise CheckpointError("training.init_allow_missing is not supported with training.strategy=fsdp yet")
    try:
        load_full_state_dict(module, st.load_file(str(file)))
    except ValueError as exc:
        raise CheckpointError(f"{file}: {exc}") from exc
    return []


def restore(trainer: Trainer) -> None:
    """Resume the trainer from ``RUN_DIR/checkpoints/last`` (weights, optimizer, state, logs, RNG)."""
    payload, rng = trainer.checkpoints.load("last", model=trainer.model, objective=trainer.objective,
                                            optimizer=trainer.optimizer,
                                            load_weights=partial(load_weights, sharded=trainer.sharded))
    state = payload["trainer"]
    if state["n_batches"] != trainer.n_batches:
        raise CheckpointError(
            f"cannot resume from {payload['_path']}: it has {state['n_batches']} batches per epoch, "
            f"this run {trainer.n_batches} (dataset, batch size or number of processes changed)"
        )
    trainer.sampler.load_state_dict(state["sampler"])
    schedule, scheduler = trainer.schedule, trainer.scheduler
    sizing = dict(vars(schedule))
    scheduler.load_state_dict(state["scheduler"])
    if vars(schedule) != sizing:
        # training.epochs (or the schedule) changed: continue on the new curve from this step
        vars(schedule).update(sizing)
        lrs = [base * schedule(scheduler.last_epoch) for base in scheduler.base_lrs]
        for group, lr in zip(trainer.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        scheduler._last_lr = lrs
    trainer.early_stopping.load_state_dict(state["early_stopping"])
    trainer.best_tracker.load_state_dict(state["best_tracker"])
    scaler = grad_scaler(trainer.fabric)
    if scaler is not None and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    trainer.position = TrainPosition(epoch=state["epoch"], batch=state["batch_in_epoch"],
                                     global_step=state["global_step"], sums=dict(state["epoch_sums"]),
                                     samples=float(state["epoch_samples"]))
    es, stop = trainer.cfg.early_stopping, trainer.early_stopping  # patience etc. may change on resume
    stop.should_stop = es.enabled and stop.bad_validations >= es.patience \
        and trainer.position.epoch - 1 >= es.min_epochs
    trainer.last_checkpoint = payload["_path"]
    logger = trainer.logger
    logger.truncate(max_step=trainer.position.global_step, max_epoch=trainer.position.epoch - 1)
    for repair in logger.repairs:
        warnings.warn(f"log repaired on resume: {repair}", stacklevel=2)
    trainer.history = [r for r in read_jsonl(logger.epochs_path) if r["epoch"] < trainer.position.epoch] \
        if logger.enabled else []
    if rng is not None and payload.get("world_size") == trainer.world_size:
        restore_rng_state(*rng)


def restore_ema(trainer: Trainer) -> None:
    """The weight average of the checkpoint being resumed (exact), or a fresh one when it has none."""
    import safetensors.torch as st

    assert trainer.ema is not None and trainer.last_checkpoint is not None
    file = Path(trainer.last_checkpoint) / EMA_WEIGHTS_FILE
    state = read_json(Path(trainer.last_checkpoint) / "state.json")["trainer"]
    if file.is_file():
        trainer.ema.load_state_tensors(st.load_file(str(file)), int(state.get("ema_updates") or 0))
