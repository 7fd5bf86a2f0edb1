"""Image–text contrastive terms: CLIP/InfoNCE, SigLIP and triplet margin.

Normalisation: CLIP and SigLIP L2-normalise both embeddings **inside the loss** (``normalize``,
default on), so the model passes raw joint-space embeddings (DESIGN: embeddings are not
normalised by the model). The triplet loss normalises anchor, positive and negative by default
(as the Balancing Act does). The temperature is not a parameter of the loss: the model owns the
learnable log-scale and exposes ``logit_scale`` = exp(log-scale), clamped (and ``logit_bias``
for SigLIP), so the optimizer sees them.

Distributed: CLIP and SigLIP score local rows against the columns of every rank, gathered with
gradient (see :mod:`medvl.objectives.distributed`); the mean over ranks of the returned values,
and DDP's averaged gradient, equal the single-process loss on the global batch. The triplet
loss draws negatives from the local batch only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.config.objective import ClipOptions, SigLipOptions, TripletOptions
from medvl.objectives.base import ObjectiveInputError, ObjectiveTerm, zero_loss
from medvl.objectives.distributed import gather_rows

__all__ = [
    "ClipLoss",
    "SigLipLoss",
    "TripletLoss",
    "clip_loss",
    "labels_differ",
    "select_negatives",
    "siglip_loss",
]


def clip_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    *,
    normalize: bool = True,
    gather: bool = True,
    pair_mask: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE, mean over rows of both directions.

    ``L = ½ [CE(s·I Tᵀ, arange) + CE(s·T Iᵀ, arange)]`` with ``I``, ``T`` (B, D) L2-normalised when
    ``normalize``; ``s`` is the (already exponentiated) logit scale. ``pair_mask`` (B,) bool keeps
    only the selected pairs (rows and columns); fewer than 2 selected pairs give an exact 0.
    Under torch.distributed this rank's value is ``world·Σ_local rows ℓ / (2·N_global)``.
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ObjectiveInputError(
            f"clip_loss: image {tuple(image.shape)} and text {tuple(text.shape)} must be equal (B, D)"
        )
    if normalize:
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
    if pair_mask is None:
        g = gather_rows(image, text, enabled=gather)
        all_image, all_text = g.tensors
        target = g.local_indices(image.device)
        rows_image, rows_text, n_pairs = image, text, g.total
    else:
        g = gather_rows(image, text, pair_mask.bool(), enabled=gather)
        all_image, all_text, all_mask = g.tensors
        n_pairs = int(all_mask.sum().item())
        if n_pairs < 2:
            return zero_loss(image, text)
        columns = all_mask.nonzero().squeeze(1)
        position = torch.cumsum(all_mask.long(), dim=0) - 1  # global row -> column index
        local = pair_mask.bool().nonzero().squeeze(1)
        target = position[local + g.offset]
        rows_image, rows_text = image[local], text[local]
        all_image, all_text = all_image[columns], all_text[columns]
    logits_per_image = logit_scale * rows_image @ all_text.T
    # one process: the text-side logits are the transpose; distributed: local text rows × all images
    logits_per_text = logits_per_image.T if g.world == 1 else logit_scale * rows_text @ all_image.T
    summed = F.cross_entropy(logits_per_image, target, reduction="sum") + F.cross_entropy(
        logits_per_text, target, reduction="sum"
    )
    return summed * (0.5 * g.world / n_pairs)


def siglip_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    *,
    normalize: bool = True,
    gather: bool = True,
) -> Tensor:
    """Pairwise sigmoid loss (Zhai et al. 2023): ``−Σ_ij log σ(z_ij (s·I_i·T_j + b)) / N``.

    ``z_ij`` = +1 for a matching pair, −1 otherwise; the sum runs over all N×N pairs of the
    (global) batch and is divided by the batch size N, as in the paper and open_clip.
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ObjectiveInputError(
            f"siglip_loss: image {tuple(image.shape)} and text {tuple(text.shape)} must be equal (B, D)"
        )
    if normalize:
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
    g = gather_rows(text, enabled=gather)
    (all_text,) = g.tensors
    logits = logit_scale * image @ all_text.T + logit_bias
    signs = -torch.ones_like(logits)
    rows = torch.arange(image.shape[0], device=image.device)
    signs[rows, g.local_indices(image.device)] = 1.0
    return -F.logsigmoid(signs * logits).sum() * (g.world / g.total)


class ClipLoss(ObjectiveTerm):
    """CLIP / InfoNCE term; reads ``image_embeds``, ``text_embeds`` and ``logit_scale``."""

    kind: ClassVar[str] = "clip"
    Options: ClassVar[type[ClipOptions]] = ClipOptions
    options: ClipOptions

    def required_outputs(self) -> tuple[str, ...]:
        return (self.options.image_key, self.options.text_key, self.options.scale_key)

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        image = self.embeddings(outputs, o.image_key)
        text = self.embeddings(outputs, o.text_key, image.shape[0])
        scale = self.scalar_output(outputs, o.scale_key)
        return {"loss": clip_loss(image, text, scale, normalize=o.normalize, gather=o.gather)}


class SigLipLoss(ObjectiveTerm):
    """SigLIP term; reads ``image_embeds``, ``text_embeds``, ``logit_scale`` and ``logit_bias``."""

    kind: ClassVar[str] = "siglip"
    Options: ClassVar[type[SigLipOptions]] = SigLipOptions
    options: SigLipOptions

    def required_outputs(self) -> tuple[str, ...]:
        o = self.options
        return (o.image_key, o.text_key, o.scale_key, o.bias_key)

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        image = self.embeddings(outputs, o.image_key)
        text = self.embeddings(outputs, o.text_key, image.shape[0])
        scale = self.scalar_output(outputs, o.scale_key)
        bias = self.scalar_output(outputs, o.bias_key)
        return {"loss": siglip_loss(image, text, scale, bias, normalize=o.normalize, gather=o.gather)}


def labels_differ(labels: Tensor) -> Tensor:
    """(B, B) bool: record i's label differs from record j's.

    Integer labels (B,) differ when unequal; multi-hot labels (B, C) differ when the vectors are
    not identical.
    """
    if labels.ndim == 1:
        return labels[:, None] != labels[None, :]
    if labels.ndim == 2:
        return (labels[:, None, :] != labels[None, :, :]).any(dim=-1)
    raise ObjectiveInputError(f"labels must be (B,) or (B, C), got shape {tuple(labels.shape)}")


def select_negatives(
    anchor: Tensor,
    texts: Tensor,
    mode: str,
    *,
    labels: Tensor | None = None,
    p: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Index of the negative text of each anchor, −1 where the batch has no admissible one.

    * ``random``: uniform over the other records ``j ≠ i``;
    * ``different_label``: uniform over records whose label differs from the anchor's;
    * ``hardest``: the closest text (p-norm distance) among ``j ≠ i`` — restricted to different
      labels when ``labels`` is given.

    Randomness comes from ``generator`` or torch's global RNG (seeded and checkpointed by the
    trainer), so draws are reproducible.
    """
    n = anchor.shape[0]
    device = anchor.device
    admissible = ~torch.eye(n, dtype=torch.bool, device=device)
    if mode == "different_label" or (mode == "hardest" and labels is not None):
        if labels is None:
            raise ValueError(f"negative sampler {mode!r} needs labels")
        if labels.shape[0] != n:
            raise ObjectiveInputError(f"labels have {labels.shape[0]} rows, the batch has {n}")
        admissible &= labels_differ(labels.to(device))
    has_negative = admissible.any(dim=1)
    with torch.no_grad():
        if mode in ("random", "different_label"):
            score = torch.rand((n, n), generator=generator, device="cpu" if generator is not None else device)
            score = score.to(device).masked_fill(~admissible, -1.0)
        elif mode == "hardest":
            score = -torch.cdist(anchor.detach().float(), texts.detach().float(), p=p)
            score = score.masked_fill(~admissible, -torch.inf)
        else:
            raise ValueError(f"unknown negative sampler {mode!r}; use random, different_label or hardest")
        index = score.argmax(dim=1)
    return torch.where(has_negative, index, torch.full_like(index, -1))


class TripletLoss(ObjectiveTerm):
    """Triplet margin term ``mean max(d(a,p) − d(a,n) + α, 0)``; anchor = image, positive = its text.

    Negatives: ``random`` / ``different_label`` / ``hardest`` texts of the batch, or ``provided``
    (a model output holding one negative text embedding per record, e.g. the prostate
    experiments' random report of a different ISUP grade sampled by the dataset). Anchors
    without an admissible negative in the batch are left out of the mean and counted in
    ``n_without_negative``.
    """

    kind: ClassVar[str] = "triplet"
    Options: ClassVar[type[TripletOptions]] = TripletOptions
    options: TripletOptions

    def required_outputs(self) -> tuple[str, ...]:
        o = self.options
        keys = [o.image_key, o.text_key]
        if o.negatives == "provided":
            keys.append(o.negative_key)
        return tuple(keys)

    def required_batch(self) -> tuple[str, ...]:
        o = self.options
        uses_labels = o.negatives == "different_label" or (
            o.negatives == "hardest" and o.hardest_different_label
        )
        return (f"labels.{o.task}",) if uses_labels else ()

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        anchor = self.embeddings(outputs, o.image_key)
        positive = self.embeddings(outputs, o.text_key, anchor.shape[0])
        if o.normalize:
            anchor = F.normalize(anchor, dim=-1)
            positive = F.normalize(positive, dim=-1)
        if o.negatives == "provided":
            negative = self.embeddings(outputs, o.negative_key, anchor.shape[0])
            if o.normalize:
                negative = F.normalize(negative, dim=-1)
            valid = torch.ones(anchor.shape[0], dtype=torch.bool, device=anchor.device)
        else:
            labels = self.labels(batch, o.task) if o.task is not None and self.required_batch() else None
            index = select_negatives(anchor, positive, o.negatives, labels=labels, p=o.p)
            valid = index >= 0
            negative = positive[index.clamp(min=0)]
        n_missing = (~valid).sum()
        if bool(valid.all()):
            loss = F.triplet_margin_loss(
                anchor, positive, negative, margin=o.margin, p=o.p, eps=o.eps, swap=o.swap
            )
        elif bool(valid.any()):
            loss = F.triplet_margin_loss(
                anchor[valid],
                positive[valid],
                negative[valid],
                margin=o.margin,
                p=o.p,
                eps=o.eps,
                swap=o.swap,
            )
        else:
            loss = zero_loss(anchor, positive)
        return {"loss": loss, "n_without_negative": n_missing.to(anchor.dtype).detach()}
