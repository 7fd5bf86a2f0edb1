"""Token pooling shared by the text and vision towers."""

from __future__ import annotations

import torch

__all__ = ["pool_tokens", "spatial_tokens"]


def pool_tokens(hidden: torch.Tensor, valid: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (B, T, D) token states with a (B, T) bool mask: ``mean`` (masked), ``cls`` (first),
    ``eos`` (last valid position; assumes right padding), ``max`` (masked)."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        w = valid.to(hidden.dtype).unsqueeze(-1)
        return (hidden * w).sum(1) / w.sum(1).clamp_min(1e-9)
    if pooling == "eos":
        last = valid.long().sum(1).clamp_min(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "max":
        return hidden.masked_fill(~valid.unsqueeze(-1), torch.finfo(hidden.dtype).min).amax(1)
    raise ValueError(f"unknown token pooling {pooling!r}")


def spatial_tokens(feature_map: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """A (B, C, H, W) feature map (``channels_last``: (B, H, W, C)) as tokens (B, H·W, C), row-major."""
    if feature_map.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) feature map, got {tuple(feature_map.shape)}")
    if channels_last:
        return feature_map.flatten(1, 2)
    return feature_map.flatten(2).transpose(1, 2)
