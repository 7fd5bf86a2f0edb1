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

Negatives drawn from the dataset (``data.negatives``; the model outputs them as
``negative_text_embeds`` (B, K, D) with ``batch["negative_mask"]`` (B, K)): the triplet term
with ``negatives: dataset`` uses each anchor's own K negatives, as the Balancing Act's
prostate code does at batch size 1; CLIP with ``dataset_negatives: true`` appends every drawn
negative of the batch as extra columns of the image→text direction.

A training step in which a row has no negative at all (a batch of one pair, an anchor whose
batch holds no different label) raises :class:`~medvl.objectives.base.NoNegativeError` by
default, because the term would silently train nothing for it; ``on_missing_negative: warn``
skips such rows with a counted warning instead (``n_without_negative`` is logged).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.config.objective import ClipOptions, SigLipOptions, TripletOptions
from medvl.objectives.base import ObjectiveInputError, ObjectiveTerm, zero_loss
from medvl.objectives.distributed import gather_rows, world_info

__all__ = [
    "NO_NEGATIVE_REMEDY",
    "ClipLoss",
    "SigLipLoss",
    "TripletLoss",
    "clip_loss",
    "dataset_negatives",
    "in_batch_columns",
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
    extra_texts: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE, mean over rows of both directions.

    ``L = ½ [CE(s·I Tᵀ, arange) + CE(s·T Iᵀ, arange)]`` with ``I``, ``T`` (B, D) L2-normalised when
    ``normalize``; ``s`` is the (already exponentiated) logit scale. ``pair_mask`` (B,) bool keeps
    only the selected pairs (rows and columns); fewer than 2 selected pairs give an exact 0.
    ``extra_texts`` (M, D) are further negative texts (e.g. drawn from the dataset): they become
    extra columns of the image→text direction for every row (normalised like ``text``); the
    text→image direction is unchanged. Under torch.distributed this rank's value is
    ``world·Σ_local rows ℓ / (2·N_global)``.
    """
    if image.shape != text.shape or image.ndim != 2:
        raise ObjectiveInputError(
            f"clip_loss: image {tuple(image.shape)} and text {tuple(text.shape)} must be equal (B, D)"
        )
    if extra_texts is not None and (extra_texts.ndim != 2 or extra_texts.shape[1] != image.shape[1]):
        raise ObjectiveInputError(f"clip_loss: extra_texts must be (M, {image.shape[1]}), got {tuple(extra_texts.shape)}")
    if normalize:
        image = F.normalize(image, dim=-1)
        text = F.normalize(text, dim=-1)
        if extra_texts is not None:
            extra_texts = F.normalize(extra_texts, dim=-1)
    if extra_texts is not None and pair_mask is not None:
        raise ObjectiveInputError("clip_loss: extra_texts and pair_mask cannot be combined")
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
    columns_text = all_text if extra_texts is None else torch.cat([all_text, extra_texts.to(all_text.dtype)])
    logits_per_image = logit_scale * rows_image @ columns_text.T
    # one process: the text-side logits are the transpose; distributed: local text rows × all images
    logits_per_text = (
        logits_per_image[:, : all_text.shape[0]].T if g.world == 1 else logit_scale * rows_text @ all_image.T
    )
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
        o = self.options
        keys = (o.image_key, o.text_key, o.scale_key)
        return (*keys, o.negative_key) if o.dataset_negatives else keys

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        image = self.embeddings(outputs, o.image_key)
        text = self.embeddings(outputs, o.text_key, image.shape[0])
        scale = self.scalar_output(outputs, o.scale_key)
        extra = None
        if o.dataset_negatives:
            negatives, mask = dataset_negatives(self, outputs, batch, o.negative_key, o.negative_mask_key, image)
            extra = negatives[mask]
        n_extra = 0 if extra is None else extra.shape[0]
        missing = image.shape[0] if in_batch_columns(image.shape[0], o.gather) + n_extra <= 1 else 0
        self.check_negatives(missing, image.shape[0], batch, o.on_missing_negative, NO_NEGATIVE_REMEDY)
        loss = (zero_loss(image, text) if missing else
                clip_loss(image, text, scale, normalize=o.normalize, gather=o.gather, extra_texts=extra))
        if o.dataset_negatives:  # the diagnostic only where it is meaningful, so logged keys stay fixed
            return {"loss": loss, "n_without_negative": _count(missing, image)}
        return {"loss": loss}


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
        missing = image.shape[0] if in_batch_columns(image.shape[0], o.gather) <= 1 else 0
        self.check_negatives(missing, image.shape[0], batch, o.on_missing_negative, NO_NEGATIVE_REMEDY)
        if missing:
            return {"loss": zero_loss(image, text)}
        return {"loss": siglip_loss(image, text, scale, bias, normalize=o.normalize, gather=o.gather)}


NO_NEGATIVE_REMEDY = (
    "Use a batch size above 1 (training.batch_size; training.drop_last: true avoids a last batch of one), "
    "or draw negatives from the dataset (data.negatives with negatives: dataset / dataset_negatives: true)."
)


def _count(n: int, like: Tensor) -> Tensor:
    return torch.tensor(float(n), dtype=like.dtype, device=like.device)


def in_batch_columns(local_rows: int, gather: bool) -> int:
    """Lower bound of the number of text columns a row is scored against in the (gathered) batch."""
    world = world_info()[1] if gather else 1
    return local_rows if world == 1 else local_rows + world - 1


def dataset_negatives(
    term: ObjectiveTerm,
    outputs: Mapping[str, Any],
    batch: Mapping[str, Any],
    key: str,
    mask_key: str,
    anchor: Tensor,
) -> tuple[Tensor, Tensor]:
    """The dataset negatives ``(B, K, D)`` and their mask ``(B, K)`` bool, checked against ``anchor``."""
    negatives = term.output(outputs, key)
    mask = term.batch_value(batch, mask_key).to(anchor.device).bool()
    rows, dim = anchor.shape
    if negatives.ndim != 3 or negatives.shape[0] != rows or negatives.shape[2] != dim:
        raise ObjectiveInputError(
            f"objective term {term.name!r}: model output {key!r} must be (B, K, D) = ({rows}, K, {dim}), got "
            f"{tuple(negatives.shape)}"
        )
    if mask.shape != negatives.shape[:2]:
        raise ObjectiveInputError(
            f"objective term {term.name!r}: batch[{mask_key!r}] has shape {tuple(mask.shape)}, expected "
            f"{tuple(negatives.shape[:2])}"
        )
    return negatives, mask


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

    Negatives: ``random`` / ``different_label`` / ``hardest`` texts of the batch; ``dataset``:
    each record's K negatives drawn from the whole dataset (``data.negatives``, the Balancing
    Act's random report of a different ISUP grade; the mean runs over every (anchor, negative)
    pair, so K = 1 is exactly torch's ``TripletMarginLoss``); or ``provided`` (a model output
    holding one negative text embedding per record). Anchors without a negative raise in a
    training step unless ``on_missing_negative: warn``; then they are left out of the mean.
    Either way their number is returned as ``n_without_negative``.
    """

    kind: ClassVar[str] = "triplet"
    Options: ClassVar[type[TripletOptions]] = TripletOptions
    options: TripletOptions

    def required_outputs(self) -> tuple[str, ...]:
        o = self.options
        keys = [o.image_key, o.text_key]
        if o.negatives in ("provided", "dataset"):
            keys.append(o.negative_key)
        return tuple(keys)

    def required_batch(self) -> tuple[str, ...]:
        o = self.options
        uses_labels = o.negatives == "different_label" or (
            o.negatives == "hardest" and o.hardest_different_label
        )
        if o.negatives == "dataset":
            return (o.negative_mask_key,)
        return (f"labels.{o.task}",) if uses_labels else ()

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        anchor = self.embeddings(outputs, o.image_key)
        positive = self.embeddings(outputs, o.text_key, anchor.shape[0])
        if o.normalize:
            anchor = F.normalize(anchor, dim=-1)
            positive = F.normalize(positive, dim=-1)
        if o.negatives == "dataset":
            negatives, mask = dataset_negatives(self, outputs, batch, o.negative_key, o.negative_mask_key, anchor)
            if o.normalize:
                negatives = F.normalize(negatives, dim=-1)
            without = int((~mask.any(dim=1)).sum())
            self.check_negatives(without, anchor.shape[0], batch, o.on_missing_negative, NO_NEGATIVE_REMEDY)
            pair_rows, pair_cols = mask.nonzero(as_tuple=True)
            if pair_rows.numel() == 0:
                return {"loss": zero_loss(anchor, positive), "n_without_negative": _count(without, anchor)}
            loss = F.triplet_margin_loss(anchor[pair_rows], positive[pair_rows], negatives[pair_rows, pair_cols],
                                         margin=o.margin, p=o.p, eps=o.eps, swap=o.swap)
            return {"loss": loss, "n_without_negative": _count(without, anchor)}
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
        self.check_negatives(int(n_missing), anchor.shape[0], batch, o.on_missing_negative, NO_NEGATIVE_REMEDY)
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
