"""Unimodal image–image contrastive terms for the benchmarking paper: SimCLR and masked-image contrast.

Both read two sets of embeddings that the **model** produced through its unimodal projector ξ
(an MLP owned by the model, so it is trained, checkpointed and frozen with it):

* ``simclr`` — ξ(φ(A₁(x))) and ξ(φ(A₂(x))) for two random augmentations (``image_view1_embeds``,
  ``image_view2_embeds`` by default);
* ``masked_image`` — ξ(φ(x)) and ξ(φ(M(x))) for the original image and a patch-masked copy
  (``image_unimodal_embeds``, ``image_masked_unimodal_embeds``).

FLIP-style random patch dropout is a property of the ViT tower (the model), not an objective.

Loss forms (``negatives``): ``nt_xent`` is SimCLR's NT-Xent — each of the 2N views is
classified against the other 2N − 1 (its partner positive, the 2N − 2 others negative), mean
over 2N rows. ``cross_view`` is the symmetric InfoNCE between the two views only, the ℓ_con form
the benchmarking paper writes (identical to :func:`medvl.objectives.contrastive.clip_loss`).
Embeddings are L2-normalised inside the loss (``normalize``). The temperature is the fixed
``temperature`` option, or a learnable scale read from the model output ``scale_key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.config.objective import MaskedImageContrastiveOptions, SimCLROptions
from medvl.objectives.base import ObjectiveInputError, ObjectiveTerm
from medvl.objectives.contrastive import clip_loss
from medvl.objectives.distributed import gather_rows

__all__ = ["MaskedImageContrastiveLoss", "SimCLRLoss", "nt_xent_loss"]


def nt_xent_loss(
    view1: Tensor, view2: Tensor, scale: Tensor | float, *, normalize: bool = True, gather: bool = True
) -> Tensor:
    """NT-Xent (Chen et al. 2020): mean over the 2N views of ``−log softmax_{k≠r}(s·z_r·z_k)[partner(r)]``.

    ``s`` = 1/τ. Under torch.distributed, local views are scored against the views of every rank
    (gathered with gradient); the mean over ranks equals the single-process global loss.
    """
    if view1.shape != view2.shape or view1.ndim != 2:
        raise ObjectiveInputError(
            f"nt_xent_loss: views {tuple(view1.shape)} and {tuple(view2.shape)} must be equal (B, D)"
        )
    if normalize:
        view1 = F.normalize(view1, dim=-1)
        view2 = F.normalize(view2, dim=-1)
    g = gather_rows(view1, view2, enabled=gather)
    all1, all2 = g.tensors
    n_global = g.total
    columns = torch.cat([all1, all2], dim=0)  # (2N, D): global view-1 rows then global view-2 rows
    queries = torch.cat([view1, view2], dim=0)  # (2B, D)
    own = g.local_indices(view1.device)
    self_index = torch.cat([own, own + n_global])
    partner = torch.cat([own + n_global, own])
    logits = scale * queries @ columns.T
    rows = torch.arange(queries.shape[0], device=queries.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, self_index] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, partner, reduction="sum") * (g.world / (2 * n_global))


class _TwoViewTerm(ObjectiveTerm):
    options: Any

    def _keys(self) -> tuple[str, str]:
        raise NotImplementedError

    def required_outputs(self) -> tuple[str, ...]:
        keys = self._keys()
        return (*keys, self.options.scale_key) if self.options.scale_key is not None else keys

    def compute(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Tensor]:
        o = self.options
        key1, key2 = self._keys()
        view1 = self.embeddings(outputs, key1)
        view2 = self.embeddings(outputs, key2, view1.shape[0])
        scale: Tensor | float = (
            self.scalar_output(outputs, o.scale_key) if o.scale_key is not None else 1.0 / o.temperature
        )
        if o.negatives == "nt_xent":
            loss = nt_xent_loss(view1, view2, scale, normalize=o.normalize, gather=o.gather)
        else:
            loss = clip_loss(view1, view2, scale, normalize=o.normalize, gather=o.gather)
        return {"loss": loss}


class SimCLRLoss(_TwoViewTerm):
    """SimCLR on two augmented views (projected by the model's ξ)."""

    kind: ClassVar[str] = "simclr"
    Options: ClassVar[type[SimCLROptions]] = SimCLROptions
    options: SimCLROptions

    def _keys(self) -> tuple[str, str]:
        return (self.options.view1_key, self.options.view2_key)

    def needs_second_view(self) -> bool:
        return True


class MaskedImageContrastiveLoss(_TwoViewTerm):
    """Contrast of the original image with its patch-masked view (both projected by the model's ξ)."""

    kind: ClassVar[str] = "masked_image"
    Options: ClassVar[type[MaskedImageContrastiveOptions]] = MaskedImageContrastiveOptions
    options: MaskedImageContrastiveOptions

    def _keys(self) -> tuple[str, str]:
        return (self.options.original_key, self.options.masked_key)
