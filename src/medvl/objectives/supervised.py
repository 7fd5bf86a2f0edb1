"""Supervised terms on classifier-head outputs ``logits.<task>`` against ``batch['labels'][task]``.

* ``bce`` — multi-label BCE with logits, mean over records × classes (Balancing Act, COCO);
* ``masked_bce`` — BCE over annotated classes only (partial labels across datasets, DLILP
  Eq. 7 as the reference code computes it: ``mean_b Σ_c m_bc ℓ_bc / (Σ_c m_bc + 1e-3)``);
* ``ce`` — multi-class cross-entropy on integer labels;
* ``mse`` — regression of one output onto an ordinal grade or real value (Balancing Act, ISUP).

No normalisation is applied: the logits are used as the head produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.config.objective import BCEOptions, CEOptions, MaskedBCEOptions, MSEOptions
from medvl.objectives.base import ObjectiveInputError, ObjectiveTerm, zero_loss

__all__ = ["BCELoss", "CrossEntropyLoss", "MSELoss", "MaskedBCELoss", "masked_bce_with_logits"]


def masked_bce_with_logits(logits: Tensor, targets: Tensor, mask: Tensor, eps: float = 1e-3) -> Tensor:
    """Partial-label BCE: ``mean_b [ Σ_c m_bc · ℓ_bc / (Σ_c m_bc + eps) ]``.

    ``ℓ`` is the element-wise BCE with logits; ``m`` (bool, same shape as ``logits``) marks the
    annotated classes. Unannotated entries contribute neither value nor gradient, even when
    their target is NaN. ``eps = 1e-3`` is the DLILP reference (jusiro/DLILP model.py); the
    paper's Eq. 7 writes ``a_ic / |a_i|`` summed over records, the code averages over records.
    A record with no annotated class contributes 0 (and still counts in the mean).
    """
    mask = mask.bool()
    safe_targets = torch.where(mask, targets.to(logits.dtype), torch.zeros_like(logits))
    elementwise = F.binary_cross_entropy_with_logits(logits, safe_targets, reduction="none")
    elementwise = torch.where(mask, elementwise, torch.zeros_like(elementwise))
    per_record = elementwise.sum(dim=-1) / (mask.to(logits.dtype).sum(dim=-1) + eps)
    return per_record.mean()


class _TaskTerm(ObjectiveTerm):
    options: Any

    def required_outputs(self) -> tuple[str, ...]:
        return (self.options.resolved_logits_key(),)

    def required_batch(self) -> tuple[str, ...]:
        return (f"labels.{self.options.task}",)

    def _logits_and_labels(
        self, outputs: Mapping[str, Any], batch: Mapping[str, Any]
    ) -> tuple[Tensor, Tensor]:
        logits = self.output(outputs, self.options.resolved_logits_key())
        labels = self.labels(batch, self.options.task).to(logits.device)
        if labels.shape[0] != logits.shape[0]:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: labels.{self.options.task} has {labels.shape[0]} records, "
                f"{self.options.resolved_logits_key()} has {logits.shape[0]}"
            )
        return logits, labels

    def _same_shape(self, logits: Tensor, labels: Tensor) -> None:
        if logits.shape != labels.shape:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: {self.options.resolved_logits_key()} has shape {tuple(logits.shape)} "
                f"but labels.{self.options.task} has shape {tuple(labels.shape)}"
            )


class BCELoss(_TaskTerm):
    """Multi-label BCE with logits (B, C) against multi-hot labels (B, C); mean over B×C."""

    kind: ClassVar[str] = "bce"
    Options: ClassVar[type[BCEOptions]] = BCEOptions
    options: BCEOptions

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        logits, labels = self._logits_and_labels(outputs, batch)
        self._same_shape(logits, labels)
        pos_weight = None
        if self.options.pos_weight is not None:
            if len(self.options.pos_weight) != logits.shape[-1]:
                raise ObjectiveInputError(
                    f"objective term {self.name!r}: options.pos_weight has {len(self.options.pos_weight)} values "
                    f"for {logits.shape[-1]} classes"
                )
            pos_weight = torch.tensor(self.options.pos_weight, dtype=logits.dtype, device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=pos_weight)
        return {"loss": loss}


class MaskedBCELoss(_TaskTerm):
    """BCE over the classes annotated for each record (``batch['label_mask'][task]``; absent = all)."""

    kind: ClassVar[str] = "masked_bce"
    Options: ClassVar[type[MaskedBCEOptions]] = MaskedBCEOptions
    options: MaskedBCEOptions

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        logits, labels = self._logits_and_labels(outputs, batch)
        self._same_shape(logits, labels)
        mask = self.label_mask(batch, self.options.task, labels).to(logits.device)
        return {"loss": masked_bce_with_logits(logits, labels, mask, self.options.eps)}


class CrossEntropyLoss(_TaskTerm):
    """Multi-class cross-entropy: logits (B, C), integer labels (B,); ``ignore_index`` marks unlabelled."""

    kind: ClassVar[str] = "ce"
    Options: ClassVar[type[CEOptions]] = CEOptions
    options: CEOptions

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        logits, labels = self._logits_and_labels(outputs, batch)
        o = self.options
        if logits.ndim != 2 or labels.ndim != 1:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: ce needs logits (B, C) and labels (B,), got "
                f"{tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        if labels.is_floating_point():
            if not bool((labels == labels.round()).all()):
                raise ObjectiveInputError(f"objective term {self.name!r}: labels.{o.task} are not integers")
            labels = labels.long()
        labelled = labels != o.ignore_index
        out_of_range = labelled & ((labels < 0) | (labels >= logits.shape[1]))
        if bool(out_of_range.any()):
            bad = sorted({int(v) for v in labels[out_of_range].tolist()})
            raise ObjectiveInputError(
                f"objective term {self.name!r}: labels.{o.task} has values {bad} outside 0..{logits.shape[1] - 1}"
            )
        if not bool(labelled.any()):
            return {"loss": zero_loss(logits)}
        loss = F.cross_entropy(logits, labels, ignore_index=o.ignore_index, label_smoothing=o.label_smoothing)
        return {"loss": loss}


class MSELoss(_TaskTerm):
    """MSE between one regression output per record, (B,) or (B, 1), and the grade/value (B,)."""

    kind: ClassVar[str] = "mse"
    Options: ClassVar[type[MSEOptions]] = MSEOptions
    options: MSEOptions

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        logits, labels = self._logits_and_labels(outputs, batch)
        prediction = logits.squeeze(-1) if logits.ndim == 2 and logits.shape[1] == 1 else logits
        if prediction.ndim != 1:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: mse needs one output per record, got {tuple(logits.shape)}"
            )
        target = labels.reshape(-1).to(prediction.dtype)
        self._same_shape(prediction, target)
        return {"loss": F.mse_loss(prediction, target)}
