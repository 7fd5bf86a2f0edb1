"""The module the trainer optimises: a model and its objective, one forward for DDP.

``TrainTask.forward(batch)`` runs ``model(batch)`` and ``objective(outputs, batch)``, so the
objective's own parameters (projectors of SimCLR-style terms, …) are trained, checkpointed and
synchronised by DDP together with the model — the pattern of open_clip's ``TrainingTask``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medvl.training.accumulation import FeatureCacheContext

__all__ = ["TrainTask", "check_losses", "check_outputs"]


def check_outputs(outputs: Any) -> Mapping[str, Any]:
    """The model's forward must return a mapping of named tensors (DESIGN: Model contract)."""
    if not isinstance(outputs, Mapping):
        raise TypeError(f"model forward must return a dict of named outputs, got {type(outputs).__name__}")
    return outputs


def check_losses(losses: Any) -> Mapping[str, torch.Tensor]:
    """The objective must return ``{"total": scalar, "<term>": scalar, …}`` (DESIGN: Objectives contract)."""
    if not isinstance(losses, Mapping) or "total" not in losses:
        raise TypeError("objective forward must return a dict with a 'total' entry and one entry per term")
    total = losses["total"]
    if not isinstance(total, torch.Tensor) or total.numel() != 1:
        raise TypeError(f"objective 'total' must be a scalar tensor, got {getattr(total, 'shape', type(total))}")
    return losses


class TrainTask(nn.Module):
    """Model + objective as one module."""

    def __init__(self, model: nn.Module, objective: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(
        self, batch: Any, *, features_only: bool = False, cache: FeatureCacheContext | None = None
    ) -> tuple[Mapping[str, Any], Mapping[str, torch.Tensor] | None]:
        """``(outputs, losses)``; ``losses`` is ``None`` when ``features_only``.

        With ``cache``, the fresh outputs of micro-batch ``cache.index`` are spliced into the
        cached outputs of the whole group and the objective sees ``cache.full_batch``.
        """
        outputs = check_outputs(self.model(batch))
        if features_only:
            return outputs, None
        if cache is not None:
            outputs = cache.splice(outputs)
            batch = cache.full_batch
        return outputs, check_losses(self.objective(outputs, batch))
