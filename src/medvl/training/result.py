"""The outcome of a fit: :class:`FitResult` and the ``RUN_DIR/training_result.json`` it is written to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medvl import __version__
from medvl.utils.io import atomic_write_json

if TYPE_CHECKING:
    from medvl.training.trainer import Trainer

__all__ = ["RESULT_FILE", "FitResult", "fit_result", "write_result"]

RESULT_FILE = "training_result.json"


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit` (also written to ``RUN_DIR/training_result.json``)."""

    status: str
    """``completed``, ``early_stopped`` or ``non_finite_loss``."""
    epochs_completed: int
    global_step: int
    best: dict[str, Any] | None
    last_checkpoint: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "epochs_completed": self.epochs_completed,
            "global_step": self.global_step,
            "best": self.best,
            "last_checkpoint": self.last_checkpoint,
            "message": self.message,
        }


def fit_result(trainer: Trainer, status: str, message: str = "") -> FitResult:
    """The trainer's outcome so far (``best`` is known on process 0 only)."""
    best = trainer.checkpoints.best_info() if trainer.rank == 0 else None
    return FitResult(status=status, epochs_completed=max(trainer.position.epoch - 1, 0),
                     global_step=trainer.position.global_step, best=best,
                     last_checkpoint=trainer.last_checkpoint, history=list(trainer.history), message=message)


def write_result(trainer: Trainer, result: FitResult) -> None:
    """Write ``result`` with the run's sizing, provenance, log repairs and skipped records (process 0)."""
    if trainer.rank != 0:
        return
    groups = trainer.param_groups
    payload = {
        **result.to_dict(),
        "medvl_version": __version__,
        "seed": trainer.seed,
        "world_size": trainer.world_size,
        "steps_per_epoch": trainer.steps_per_epoch,
        "total_steps": trainer.schedule.total_steps,
        "param_groups": {k: len(v) for k, v in (groups.names if groups else {}).items()},
        "frozen_params": len(groups.frozen) if groups else 0,
        "provenance": trainer.provenance,
    }
    if trainer.logger.repairs:
        payload["log_repairs"] = list(trainer.logger.repairs)
    for key, dataset in (("train_skipped", trainer.train_set), ("val_skipped", trainer.val_set)):
        skip_report = getattr(dataset, "skip_report", None)
        if callable(skip_report):
            payload[key] = skip_report()
    if trainer.init_missing:
        payload["init_missing_parameters"] = trainer.init_missing
    atomic_write_json(trainer.run_dir / RESULT_FILE, payload)
