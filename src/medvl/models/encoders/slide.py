"""Slide-level encoder for whole-slide images given as bags of precomputed region features.

Input: ``bag`` (B, N, input_dim) and ``bag_mask`` (B, N) bool (True = real instance); bags of
different sizes are padded to N and masked. Architecture (HIPT slide level, A.4):
``phi`` = Linear + ReLU + Dropout → transformer encoder layers (padding masked) → gated
attention pooling (Ilse et al. 2018, softmax over the valid instances only) → ``rho`` =
Linear + ReLU + Dropout → (B, width).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from medvl.config.model import SlideEncoderConfig
from medvl.models.encoders.base import ImageEncoder, maybe_checkpoint

__all__ = ["GatedAttentionPool", "SlideEncoder"]


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


class SlideEncoder(ImageEncoder):
    """Bag encoder. Layer groups: [phi, transformer layer 0..depth-1, attention pooling + rho]."""

    input_key = "bag"

    def __init__(self, cfg: SlideEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.phi = nn.Sequential(nn.Linear(cfg.input_dim, cfg.width), nn.ReLU(), nn.Dropout(cfg.dropout))
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

    def layer_groups(self) -> list[nn.Module]:
        return [self.phi, *self.layers, nn.ModuleList([self.pool, self.rho])]

    def encode_batch(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if "bag" not in batch:
            raise KeyError(
                f"the slide encoder reads batch['bag'] (+ 'bag_mask') but the batch has keys {sorted(batch)}"
            )
        return self(batch["bag"], batch.get("bag_mask"))

    def instances(
        self, bag: torch.Tensor, bag_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Contextualised instance states (B, N, width) and the bool validity mask (B, N)."""
        if bag.ndim != 3 or bag.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"bag must be (B, N, {self.cfg.input_dim}), got {tuple(bag.shape)}")
        if bag_mask is None:
            bag_mask = torch.ones(bag.shape[:2], dtype=torch.bool, device=bag.device)
        if bag_mask.shape != bag.shape[:2]:
            raise ValueError(
                f"bag_mask shape {tuple(bag_mask.shape)} does not match bag {tuple(bag.shape[:2])}"
            )
        mask = bag_mask.bool()
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"bags at batch positions {empty} have no valid instance (bag_mask all False)")
        h = self.phi(bag)
        ckpt = self.cfg.grad_checkpointing and self.training
        for layer in self.layers:
            h = maybe_checkpoint(layer, h, src_key_padding_mask=~mask, enabled=ckpt)
        return h, mask

    def attention_weights(self, bag: torch.Tensor, bag_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Gated-attention weights (B, N) over the instances (0 at padding, rows sum to 1),
        e.g. for region heatmaps."""
        h, mask = self.instances(bag, bag_mask)
        return self.pool.weights(h, mask)

    def forward(self, bag: torch.Tensor, bag_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``bag`` (B, N, input_dim), ``bag_mask`` (B, N) bool or None (all valid) → (B, width)."""
        h, mask = self.instances(bag, bag_mask)
        return self.rho(self.pool(h, mask))
