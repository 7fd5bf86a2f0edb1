"""Slide-level encoder for whole-slide images given as bags of features, optionally hierarchical.

Flat bags (one level): ``bag`` (B, N, input_dim) and ``bag_mask`` (B, N) bool (True = real
instance); bags of different sizes are padded to N and masked.

Hierarchical bags (HIPT's 4K → slide hierarchy, the Balancing Act's H-ViT): ``bag`` (B, M, T,
patch_dim) holds, for each of M regions, its T = R×R patch features in row-major order,
``bag_mask`` (B, M) marks real regions and the optional ``token_mask`` (B, M, T) real patches.
The **region level** (:class:`RegionTransformer`, HIPT's ViT-4K) turns each valid region into
one embedding; padded regions are never computed, so they cannot change the result. A bag of
region features (B, M, region.width) skips the region level.

**Slide level** (HIPT ``global_*``, reference notes A.4): ``phi`` = Linear + ReLU + Dropout →
transformer encoder layers (post-norm, padding masked) → gated attention pooling (Ilse et al.
2018, softmax over the valid instances only) → ``rho`` = Linear + ReLU + Dropout → (B, width).

Layer groups, from the input: region level ``[region.embed, region.blocks.0 … , region.norm]``
then slide level ``[phi, layers.0 …, pool + rho]``; ``freeze_levels`` freezes whole levels.
Published HIPT weights load through :mod:`medvl.models.encoders.hipt`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvl.config.model import FreezeConfig, RegionTransformerConfig, SlideEncoderConfig
from medvl.models.encoders.base import ImageEncoder, maybe_checkpoint
from medvl.models.encoders.tiny import TransformerBlock

__all__ = ["GatedAttentionPool", "RegionTransformer", "SlideEncoder"]


class GatedAttentionPool(nn.Module):
    """``a_i = w^T (tanh(V h_i) ⊙ sigmoid(U h_i))``; weights ``softmax(a)`` over valid i; returns Σ w_i h_i."""

    def __init__(self, dim: int, attention_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention_a = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(dim, attention_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(attention_dim, 1)

    def weights(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights (B, N), zero at padded positions, summing to 1 per bag."""
        scores = self.attention_c(self.attention_a(h) * self.attention_b(h)).squeeze(-1)
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(h, mask).unsqueeze(-1) * h).sum(dim=1)


class _RegionEmbedding(nn.Module):
    """``phi`` (Linear + GELU + Dropout) of the patch tokens, the CLS token and the position grid."""

    def __init__(self, cfg: RegionTransformerConfig) -> None:
        super().__init__()
        grid = cfg.pos_grid or cfg.grid
        self.phi = nn.Sequential(nn.Linear(cfg.patch_dim, cfg.width), nn.GELU(), nn.Dropout(cfg.dropout))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, cfg.width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(cfg.dropout)

    def positions(self, side: int) -> torch.Tensor:
        """Position embeddings (1, 1 + side², width) for a side×side token grid.

        Equal to the stored ones when the grid matches; otherwise the patch positions are resized
        bicubically with scale factor (side + 0.1) / grid, exactly as HIPT's
        ``interpolate_pos_encoding`` does (its +0.1 avoids a floating-point off-by-one).
        """
        n = self.pos_embed.shape[1] - 1
        grid = math.isqrt(n)
        if side == grid:
            return self.pos_embed
        dim = self.pos_embed.shape[-1]
        patch = self.pos_embed[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
        scale = (side + 0.1) / grid
        patch = F.interpolate(patch, scale_factor=(scale, scale), mode="bicubic")
        if patch.shape[-2:] != (side, side):  # pragma: no cover - guarded by the +0.1
            raise RuntimeError(f"position grid resized to {tuple(patch.shape[-2:])}, expected {side}×{side}")
        patch = patch.permute(0, 2, 3, 1).reshape(1, side * side, dim)
        return torch.cat([self.pos_embed[:, :1], patch], dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(R, T, patch_dim) → (R, 1 + T, width) with CLS first and positions added."""
        x = self.phi(tokens)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.positions(math.isqrt(tokens.shape[1]))
        return self.pos_drop(x)


class RegionTransformer(nn.Module):
    """HIPT's region-level ViT: (R, T, patch_dim) patch tokens → (R, width) CLS embeddings.

    Pre-norm blocks (``TransformerBlock``, LayerNorm eps 1e-6), final LayerNorm, CLS output; the
    T tokens must form a square grid in row-major order. ``token_mask`` (R, T) keeps padded
    patch tokens out of every attention (the CLS token is always attended).
    """

    def __init__(self, cfg: RegionTransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _RegionEmbedding(cfg)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout, eps=1e-6) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)

    def layer_groups(self) -> list[nn.Module]:
        return [self.embed, *self.blocks, self.norm]

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor | None = None,
                checkpointing: bool = False) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.cfg.patch_dim:
            raise ValueError(f"region tokens must be (R, T, {self.cfg.patch_dim}), got {tuple(tokens.shape)}")
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"a region needs a square grid of patch tokens, got {tokens.shape[1]}")
        x = self.embed(tokens)
        padding = None
        if token_mask is not None:
            keep = torch.cat([torch.ones_like(token_mask[:, :1]), token_mask.bool()], dim=1)
            padding = ~keep
        for block in self.blocks:
            x = maybe_checkpoint(block, x, key_padding_mask=padding, enabled=checkpointing)
        return self.norm(x)[:, 0]


class SlideEncoder(ImageEncoder):
    """Bag encoder (see the module docstring); ``feature_dim`` = ``width``."""

    input_key = "bag"

    def __init__(self, cfg: SlideEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.region = RegionTransformer(cfg.region) if cfg.region is not None else None
        self.phi = nn.Sequential(nn.Linear(cfg.instance_dim, cfg.width), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=cfg.width,
                nhead=cfg.heads,
                dim_feedforward=cfg.ff_dim or cfg.width,
                dropout=cfg.dropout,
                activation="relu",
                batch_first=True,
            )
            for _ in range(cfg.depth)
        )
        self.pool = GatedAttentionPool(cfg.width, cfg.attention_dim or cfg.width, cfg.dropout)
        self.rho = nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.feature_dim = cfg.width

    # ------------------------------------------------------------------ freezing
    def layer_groups(self) -> list[nn.Module]:
        region = self.region.layer_groups() if self.region is not None else []
        return [*region, self.phi, *self.layers, nn.ModuleList([self.pool, self.rho])]

    def level_groups(self) -> dict[str, list[int]]:
        """Indices into :meth:`layer_groups` of each level (``region``, ``slide``)."""
        n_region = len(self.region.layer_groups()) if self.region is not None else 0
        n_all = len(self.layer_groups())
        return {"region": list(range(n_region)), "slide": list(range(n_region, n_all))}

    def resolve_freeze(self, freeze: FreezeConfig) -> FreezeConfig:
        """``freeze_levels`` as a :class:`FreezeConfig` over the layer groups (else ``freeze`` as given)."""
        levels = set(self.cfg.freeze_levels)
        if not levels:
            return freeze
        if levels == {"region", "slide"} or (levels == {"slide"} and self.region is None):
            return FreezeConfig(mode="full")
        groups = self.level_groups()
        return FreezeConfig(mode="partial", indices=[i for level in sorted(levels) for i in groups[level]])

    # ------------------------------------------------------------------ forward
    def encode_batch(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if "bag" not in batch:
            raise KeyError(
                f"the slide encoder reads batch['bag'] (+ 'bag_mask') but the batch has keys {sorted(batch)}"
            )
        return self(batch["bag"], batch.get("bag_mask"), batch.get("token_mask"))

    def region_features(
        self, bag: torch.Tensor, bag_mask: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Instance features (B, M, instance_dim) and the validity mask (B, M).

        4-D bags go through the region transformer, valid regions only (padded rows stay 0).
        """
        if bag.ndim == 4:
            if self.region is None:
                raise ValueError(
                    f"bag of region tokens {tuple(bag.shape)} but this slide encoder has no region level "
                    "(set vision.region, or give (B, N, d) bags)"
                )
            b, m, t, _ = bag.shape
        elif bag.ndim == 3:
            b, m = bag.shape[:2]
            if bag.shape[-1] != self.cfg.instance_dim:
                what = "region features" if self.region is not None else "instance features"
                raise ValueError(f"bag must be (B, N, {self.cfg.instance_dim}) ({what}), got {tuple(bag.shape)}")
        else:
            raise ValueError(f"bag must be (B, N, d) or (B, M, T, d), got {tuple(bag.shape)}")
        if bag_mask is None:
            bag_mask = torch.ones((b, m), dtype=torch.bool, device=bag.device)
        if bag_mask.shape != (b, m):
            raise ValueError(f"bag_mask shape {tuple(bag_mask.shape)} does not match bag {(b, m)}")
        mask = bag_mask.bool()
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"bags at batch positions {empty} have no valid instance (bag_mask all False)")
        if bag.ndim == 3:
            return bag, mask
        assert self.region is not None
        if token_mask is not None and token_mask.shape != (b, m, t):
            raise ValueError(f"token_mask shape {tuple(token_mask.shape)} does not match bag {(b, m, t)}")
        tokens = bag[mask]  # (R, T, patch_dim), valid regions only
        region_mask = token_mask[mask] if token_mask is not None else None
        ckpt = self.cfg.grad_checkpointing and self.training
        embedded = self.region(tokens, region_mask, checkpointing=ckpt)
        out = embedded.new_zeros((b, m, embedded.shape[-1]))
        out[mask] = embedded
        return out, mask

    def instances(
        self, bag: torch.Tensor, bag_mask: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextualised instance states (B, M, width) and the bool validity mask (B, M)."""
        features, mask = self.region_features(bag, bag_mask, token_mask)
        h = self.phi(features)
        ckpt = self.cfg.grad_checkpointing and self.training
        for layer in self.layers:
            h = maybe_checkpoint(layer, h, src_key_padding_mask=~mask, enabled=ckpt)
        return h, mask

    def attention_weights(
        self, bag: torch.Tensor, bag_mask: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Gated-attention weights (B, M) over the instances (0 at padding, rows sum to 1),
        e.g. for region heatmaps."""
        h, mask = self.instances(bag, bag_mask, token_mask)
        return self.pool.weights(h, mask)

    def forward(
        self, bag: torch.Tensor, bag_mask: torch.Tensor | None = None, token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``bag`` (B, N, d) or (B, M, T, patch_dim) with masks → slide embeddings (B, width)."""
        h, mask = self.instances(bag, bag_mask, token_mask)
        return self.rho(self.pool(h, mask))
