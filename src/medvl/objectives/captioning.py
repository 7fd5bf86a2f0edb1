"""CoCa's captioning term: token cross-entropy of the decoder's next-token logits (padding ignored)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.config.objective import CAPTION_IGNORE_INDEX as IGNORE_INDEX
from medvl.config.objective import CaptionOptions
from medvl.objectives.base import ObjectiveInputError, ObjectiveTerm, zero_loss

__all__ = ["CaptionLoss", "caption_loss"]


def caption_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over the target tokens of ``labels`` (B, T) that are not ``-100``.

    ``logits`` (B, T, V). A batch without any target token gives an exact, graph-connected 0.
    """
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ObjectiveInputError(
            f"caption_loss: logits (B, T, V) and labels (B, T) expected, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not bool((labels != IGNORE_INDEX).any()):
        return zero_loss(logits)
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.dtype not in (torch.float32, torch.float64):  # bf16/fp16 logits: the softmax in float32
        flat = flat.float()
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)


class CaptionLoss(ObjectiveTerm):
    """CoCa captioning loss ``ℓ_cap`` (model outputs ``caption_logits``, ``caption_labels``)."""

    kind: ClassVar[str] = "caption"
    Options: ClassVar[type[CaptionOptions]] = CaptionOptions
    options: CaptionOptions

    def required_outputs(self) -> tuple[str, ...]:
        return (self.options.logits_key, self.options.labels_key)

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        logits = self.output(outputs, o.logits_key)
        labels = self.output(outputs, o.labels_key)
        n_tokens = (labels != IGNORE_INDEX).sum()
        return {"loss": caption_loss(logits, labels, o.label_smoothing), "n_tokens": n_tokens.detach().float()}
