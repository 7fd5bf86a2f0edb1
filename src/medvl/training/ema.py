"""Exponential moving average of a model's weights (``training.ema``).

After every ``every_n_steps``-th optimizer step, ``ema ← d·ema + (1 − d)·w`` for every floating
parameter of the model, with ``d = decay`` or, with ``warmup``, ``d = min(decay, (1 + t)/(10 + t))``
after ``t`` updates (so early averages are not dominated by the random start); buffers (BatchNorm
statistics) are copied. The average is kept in float32 on the parameters' device.

Validation runs on the averaged weights (:meth:`WeightEMA.swapped_in`), checkpoints store them as
``ema.safetensors`` next to the training weights (``model.safetensors``, needed to resume), and
loading a trained model (``load_trained_model``, evaluation, sweep test metrics, export) uses them,
so "best" means the best averaged weights. Resume restores the average and its update count exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA_FILE", "WeightEMA"]

EMA_FILE = "ema.safetensors"


class WeightEMA:
    """The moving average of ``model``'s floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"training.ema.decay must lie in (0, 1), got {decay}")
        self.model = model
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: value.detach().to(torch.float32).clone() if value.is_floating_point() else value.detach().clone()
            for name, value in model.state_dict().items()
        }

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average."""
        d = self.current_decay()
        params = dict(self.model.named_parameters())
        for name, value in self.model.state_dict().items():
            target = self.shadow[name]
            if name in params and value.is_floating_point():
                target.mul_(d).add_(value.detach().to(torch.float32), alpha=1.0 - d)
            else:
                target.copy_(value.detach())
        self.updates += 1

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Run the block with the averaged weights in the model, then put the training weights back."""
        saved = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        self._copy_into_model(self.shadow)
        try:
            yield
        finally:
            self._copy_into_model(saved)

    @torch.no_grad()
    def _copy_into_model(self, source: dict[str, torch.Tensor]) -> None:
        for name, value in self.model.state_dict().items():
            value.copy_(source[name].to(value.dtype))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The average as CPU tensors in the model's own dtypes (what ``ema.safetensors`` holds)."""
        current = self.model.state_dict()
        return {name: value.to(current[name].dtype).contiguous().cpu() for name, value in self.shadow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        """Restore a saved average (exactly: float32 shadows of float32 models round-trip bit for bit)."""
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise ValueError(f"the saved weight average lacks {missing[:5]}")
        for name, target in self.shadow.items():
            target.copy_(tensors[name].to(target.device, target.dtype))
        self.updates = int(updates)
