"""Random masking that makes the masked view of masked-image contrast (pixels or feature bags)."""

from __future__ import annotations

import torch

__all__ = ["mask_bag_instances", "mask_image_patches"]


def mask_image_patches(
    pixel_values: torch.Tensor, mask_ratio: float, patch_size: int, fill: float = 0.0
) -> torch.Tensor:
    """Copy of ``pixel_values`` (B, C, H, W) with ``round(mask_ratio · n)`` of its n ``patch_size``
    squares (a partial last row/column counts as a square) set to ``fill``, chosen per image."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (B, C, H, W), got {tuple(pixel_values.shape)}")
    b, _, h, w = pixel_values.shape
    gh, gw = -(-h // patch_size), -(-w // patch_size)
    n = gh * gw
    k = min(n - 1, max(1, round(mask_ratio * n))) if n > 1 else 0
    scores = torch.rand(b, n, device=pixel_values.device)
    chosen = scores.topk(k, dim=1).indices if k else scores[:, :0].long()
    grid = torch.zeros(b, n, dtype=torch.bool, device=pixel_values.device)
    grid.scatter_(1, chosen, True)
    grid2d = grid.view(b, 1, gh, gw)
    full = grid2d.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)[:, :, :h, :w]
    return pixel_values.masked_fill(full, fill)


def mask_bag_instances(bag_mask: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """New (B, N) validity mask that hides ``round(mask_ratio · n_valid)`` valid instances per bag
    (at least one instance stays valid)."""
    valid = bag_mask.bool()
    scores = torch.rand(valid.shape, device=valid.device).masked_fill(~valid, -1.0)
    n_valid = valid.sum(dim=1)
    keep = (n_valid - (mask_ratio * n_valid.float()).round().long()).clamp(min=1)
    order = scores.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(valid.shape[1], device=valid.device).expand_as(order))
    return valid & (rank < keep.unsqueeze(1))
