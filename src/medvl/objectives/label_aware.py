"""Label-aware terms: UniCL, the unimodal prototype classifier, and DLILP.

* ``unicl`` — CLIP with soft targets (Yang et al. 2022; DLILP Eqs. 3–4): image i and text j are
  positives when they share at least one label (or i = j); each row's target distribution is
  uniform over its positives. Embeddings are L2-normalised inside the loss. With all labels
  distinct the targets are the identity and the loss equals CLIP exactly.
* ``prototype_bce`` — DLILP's "Unimodal": logits ``s · norm(v) @ norm(W)ᵀ`` against multi-hot
  labels with the partial-label mask (Eq. 7, ``+1e-3`` denominator as the reference code).
  The prototypes ``W`` (C, D) and the head's own scale ``s`` (``logit_scale_2``) are model
  outputs (trainable in the model); prototypes are always L2-normalised here, embeddings when
  ``normalize``. Alternatively the model's ``prototype_logits.<task>`` are read as they are.
* ``dlilp`` — Eq. 6: ``L_Uni`` through the image–label projection (with its own temperature)
  ``+ λ · L_CLIP`` through the image–text projection (λ additive, paper: 0.1).

Multi-class labels (B,) count as sharing a label when equal and ≥ 0 (negative = unlabelled);
multi-hot labels (B, C) when some class is positive in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.config.objective import DLILPOptions, PrototypeBCEOptions, UniCLOptions
from medvl.objectives.base import ObjectiveInputError, ObjectiveTerm, zero_loss
from medvl.objectives.contrastive import NO_NEGATIVE_REMEDY, clip_loss, in_batch_columns
from medvl.objectives.distributed import gather_rows
from medvl.objectives.supervised import masked_bce_with_logits

__all__ = ["DLILPLoss", "PrototypeBCELoss", "UniCLLoss", "prototype_logits", "share_label", "unicl_loss"]


def share_label(rows: Tensor, columns: Tensor) -> Tensor:
    """(R, K) bool: row record shares a label with column record (see module docstring)."""
    if rows.ndim == 1 and columns.ndim == 1:
        return (rows[:, None] == columns[None, :]) & (rows[:, None] >= 0)
    if rows.ndim == 2 and columns.ndim == 2:
        return ((rows > 0).float() @ (columns > 0).float().T) > 0
    raise ObjectiveInputError(
        f"labels must both be (B,) or both (B, C), got {tuple(rows.shape)} and {tuple(columns.shape)}"
    )


def unicl_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    image_labels: Tensor,
    text_labels: Tensor,
    *,
    normalize: bool = True,
    gather: bool = True,
) -> Tensor:
    """UniCL: ``½ [CE(s·I Tᵀ, R/R·1) + CE(s·T Iᵀ, Rᵀ/Rᵀ·1)]`` with ``R_ij = 1[share label or i = j]``.

    Soft-target cross-entropy, mean over rows; the distributed scheme is the one of
    :func:`medvl.objectives.contrastive.clip_loss`.
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ObjectiveInputError(
            f"unicl_loss: image {tuple(image.shape)} and text {tuple(text.shape)} must be equal (B, D)"
        )
    if image_labels.shape[0] != image.shape[0] or text_labels.shape[0] != image.shape[0]:
        raise ObjectiveInputError("unicl_loss: labels and embeddings disagree on the batch size")
    if normalize:
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
    g = gather_rows(image, text, image_labels, text_labels, enabled=gather)
    all_image, all_text, all_image_labels, all_text_labels = g.tensors
    rows = torch.arange(image.shape[0], device=image.device)
    own = g.local_indices(image.device)
    positives_i2t = share_label(image_labels, all_text_labels)
    positives_i2t[rows, own] = True
    positives_t2i = share_label(text_labels, all_image_labels)
    positives_t2i[rows, own] = True
    logits_per_image = logit_scale * image @ all_text.T
    logits_per_text = logits_per_image.T if g.world == 1 else logit_scale * text @ all_image.T
    target_i2t = positives_i2t.to(logits_per_image.dtype)
    target_i2t = target_i2t / target_i2t.sum(dim=1, keepdim=True)
    target_t2i = positives_t2i.to(logits_per_text.dtype)
    target_t2i = target_t2i / target_t2i.sum(dim=1, keepdim=True)
    summed = F.cross_entropy(logits_per_image, target_i2t, reduction="sum") + F.cross_entropy(
        logits_per_text, target_t2i, reduction="sum"
    )
    return summed * (0.5 * g.world / g.total)


def prototype_logits(
    embeds: Tensor, prototypes: Tensor, logit_scale: Tensor | float, *, normalize: bool = True
) -> Tensor:
    """``s · norm(v) @ norm(W)ᵀ`` (B, C); ``v`` normalised only when ``normalize``."""
    if embeds.ndim != 2 or prototypes.ndim != 2 or embeds.shape[1] != prototypes.shape[1]:
        raise ObjectiveInputError(
            f"prototype logits need embeddings (B, D) and prototypes (C, D), got {tuple(embeds.shape)} and "
            f"{tuple(prototypes.shape)}"
        )
    if normalize:
        embeds = F.normalize(embeds, dim=-1)
    return logit_scale * embeds @ F.normalize(prototypes, dim=-1).T


class UniCLLoss(ObjectiveTerm):
    """UniCL term; reads image/text embeddings, ``logit_scale`` and ``labels.<task>``."""

    kind: ClassVar[str] = "unicl"
    Options: ClassVar[type[UniCLOptions]] = UniCLOptions
    options: UniCLOptions

    def required_outputs(self) -> tuple[str, ...]:
        return (self.options.image_key, self.options.text_key, self.options.scale_key)

    def required_batch(self) -> tuple[str, ...]:
        keys = [f"labels.{self.options.task}"]
        if self.options.use_text_labels:
            keys.append(f"text_labels.{self.options.task}")
        return tuple(keys)

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        image = self.embeddings(outputs, o.image_key)
        text = self.embeddings(outputs, o.text_key, image.shape[0])
        scale = self.scalar_output(outputs, o.scale_key)
        image_labels = self.labels(batch, o.task).to(image.device)
        text_labels = (
            self.batch_value(batch, f"text_labels.{o.task}").to(image.device)
            if o.use_text_labels
            else image_labels
        )
        missing = image.shape[0] if in_batch_columns(image.shape[0], o.gather) <= 1 else 0
        self.check_negatives(missing, image.shape[0], batch, o.on_missing_negative, NO_NEGATIVE_REMEDY)
        if missing:
            return {"loss": zero_loss(image, text)}
        loss = unicl_loss(
            image, text, scale, image_labels, text_labels, normalize=o.normalize, gather=o.gather
        )
        return {"loss": loss}


class PrototypeBCELoss(ObjectiveTerm):
    """Prototype classifier term (DLILP "Unimodal"); reads embeddings, ``prototypes.<task>`` and the
    prototype scale ``logit_scale_2`` — or, with ``logits_key``, the model's prototype logits."""

    kind: ClassVar[str] = "prototype_bce"
    Options: ClassVar[type[PrototypeBCEOptions]] = PrototypeBCEOptions
    options: PrototypeBCEOptions

    def required_outputs(self) -> tuple[str, ...]:
        o = self.options
        if o.logits_key is not None:
            return (o.logits_key,)
        return (o.embeds_key, o.resolved_prototypes_key(), o.scale_key)

    def required_batch(self) -> tuple[str, ...]:
        return (f"labels.{self.options.task}",)

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        if o.logits_key is not None:
            logits = self.output(outputs, o.logits_key)
            where = o.logits_key
        else:
            embeds = self.embeddings(outputs, o.embeds_key)
            prototypes = self.output(outputs, o.resolved_prototypes_key())
            scale = self.scalar_output(outputs, o.scale_key)
            logits = prototype_logits(embeds, prototypes, scale, normalize=o.normalize)
            where = f"the prototype logits of {o.embeds_key} and {o.resolved_prototypes_key()}"
        labels = self.labels(batch, o.task).to(logits.device)
        if labels.shape != logits.shape:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: labels.{o.task} has shape {tuple(labels.shape)} but {where} "
                f"have shape {tuple(logits.shape)}"
            )
        if o.masked:
            mask = self.label_mask(batch, o.task, labels).to(logits.device)
            loss = masked_bce_with_logits(logits, labels, mask, o.eps)
        else:
            loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return {"loss": loss}


class DLILPLoss(ObjectiveTerm):
    """DLILP (Eq. 6): ``masked prototype BCE(image–label proj.) + λ · CLIP(image–text proj.)``.

    Returns ``loss`` and the sub-terms ``bce`` and ``clip`` (unweighted). With ``clip_mask_key``
    only the records whose mask is True (real reports, not label-template prompts) enter the
    CLIP branch; fewer than two such pairs give ``clip = 0``, as in the reference code.
    """

    kind: ClassVar[str] = "dlilp"
    Options: ClassVar[type[DLILPOptions]] = DLILPOptions
    options: DLILPOptions

    def required_outputs(self) -> tuple[str, ...]:
        o = self.options
        return (
            o.image_key,
            o.text_key,
            o.scale_key,
            o.label_embeds_key,
            o.label_scale_key,
            o.resolved_prototypes_key(),
        )

    def required_batch(self) -> tuple[str, ...]:
        keys = [f"labels.{self.options.task}"]
        if self.options.clip_mask_key is not None:
            keys.append(self.options.clip_mask_key)
        return tuple(keys)

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        label_embeds = self.embeddings(outputs, o.label_embeds_key)
        prototypes = self.output(outputs, o.resolved_prototypes_key())
        label_scale = self.scalar_output(outputs, o.label_scale_key)
        logits = prototype_logits(label_embeds, prototypes, label_scale)
        labels = self.labels(batch, o.task).to(logits.device)
        if labels.shape != logits.shape:
            raise ObjectiveInputError(
                f"objective term {self.name!r}: labels.{o.task} has shape {tuple(labels.shape)}, prototype logits "
                f"{tuple(logits.shape)}"
            )
        mask = self.label_mask(batch, o.task, labels).to(logits.device)
        bce = masked_bce_with_logits(logits, labels, mask, o.eps)

        image = self.embeddings(outputs, o.image_key, label_embeds.shape[0])
        text = self.embeddings(outputs, o.text_key, label_embeds.shape[0])
        scale = self.scalar_output(outputs, o.scale_key)
        pair_mask = None
        if o.clip_mask_key is not None:
            pair_mask = self.batch_value(batch, o.clip_mask_key).to(image.device)
            if pair_mask.shape != (image.shape[0],):
                raise ObjectiveInputError(
                    f"objective term {self.name!r}: batch[{o.clip_mask_key!r}] must be (B,) = ({image.shape[0]},), "
                    f"got {tuple(pair_mask.shape)}"
                )
        clip = clip_loss(image, text, scale, gather=o.gather, pair_mask=pair_mask)
        return {"loss": bce + o.clip_weight * clip, "bce": bce, "clip": clip}
