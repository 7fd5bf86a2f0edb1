"""The training engine: Lightning Fabric loop, optimizers/schedules, checkpoints, callbacks, logs.

Entry points: :class:`Trainer` (any model returning a dict of named outputs + any objective
returning named terms) and :func:`medvl.training.run.run_training` (a whole ``RunConfig``).
"""

from medvl.training.callbacks import (
    Callback,
    EarlyStopping,
    ObjectiveValidation,
    ValidationContext,
    ValidationHook,
)
from medvl.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_model_weights,
    resolve_checkpoint,
)
from medvl.training.optim import build_optimizer, build_param_groups, build_scheduler
from medvl.training.trainer import FitResult, NonFiniteLossError, Trainer

__all__ = [
    "Callback",
    "CheckpointError",
    "CheckpointManager",
    "EarlyStopping",
    "FitResult",
    "NonFiniteLossError",
    "ObjectiveValidation",
    "Trainer",
    "ValidationContext",
    "ValidationHook",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "load_model_weights",
    "resolve_checkpoint",
]
