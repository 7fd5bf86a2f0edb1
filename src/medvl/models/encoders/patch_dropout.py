"""FLIP-style random patch dropout (Li et al., 2023; open_clip ``PatchDropout``).

In training mode a random subset of ``max(1, round(keep_ratio · N))`` patch tokens is kept per
sample (prefix tokens such as CLS/registers are always kept, in place, first); in eval mode the
input passes through unchanged (open_clip issue #758: users expect no dropout at inference).
Keep-indices are drawn on the activation's device from the global torch RNG, so a seeded run
is reproducible.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PatchDropout"]


class PatchDropout(nn.Module):
    """Keep a random fraction ``keep_ratio`` of the tokens after ``num_prefix_tokens`` (training only)."""

    def __init__(self, keep_ratio: float, num_prefix_tokens: int = 1) -> None:
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"patch keep_ratio must be in (0, 1], got {keep_ratio}")
        if num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens must be >= 0, got {num_prefix_tokens}")
        self.keep_ratio = float(keep_ratio)
        self.num_prefix_tokens = int(num_prefix_tokens)

    def num_kept(self, num_patches: int) -> int:
        """How many of ``num_patches`` patch tokens survive in training mode."""
        return max(1, round(self.keep_ratio * num_patches))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, P + N, D) → (B, P + keep, D) in training mode; unchanged in eval mode."""
        if not self.training or self.keep_ratio >= 1.0:
            return tokens
        prefix, patches = tokens[:, : self.num_prefix_tokens], tokens[:, self.num_prefix_tokens :]
        batch, n, dim = patches.shape
        keep = self.num_kept(n)
        scores = torch.rand(batch, n, device=tokens.device)
        idx = scores.topk(keep, dim=1).indices.sort(dim=1).values  # keep spatial order
        kept = patches.gather(1, idx.unsqueeze(-1).expand(batch, keep, dim))
        return torch.cat([prefix, kept], dim=1)

    def extra_repr(self) -> str:
        return f"keep_ratio={self.keep_ratio}, num_prefix_tokens={self.num_prefix_tokens}"
