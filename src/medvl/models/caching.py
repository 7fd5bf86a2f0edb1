"""Caching the outputs of a fully frozen tower.

A fully frozen tower (``freeze.mode: full``) runs in eval mode with fixed weights, so when its
input is not randomly augmented its output for a given input never changes. ``FeatureCache``
stores those *pre-projection* features keyed by a string — the raw text for the text tower,
the record id for the image tower — so every later epoch and every λ of a sweep that reuses the
model object skips the tower's forward pass. Projections and heads stay trainable and are
applied to the cached features on every call, so losses equal those of recomputation.

How the trainer uses it: nothing to do for a frozen text tower (``cache: auto`` turns it on);
``DualEncoder.forward(batch)`` and ``encode_text(list_of_str)`` consult the cache. Call
``model.clear_feature_caches()`` whenever the frozen tower's weights change outside
``load_state_dict``/``from_pretrained`` (those clear it). ``model.feature_cache_stats()`` gives
hits/misses for logs.

Entries live on the device where they were computed and are moved to the requested device on
lookup. Separate namespaces are kept for each autocast dtype so a bf16 forward never feeds an
fp32 evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["CacheStats", "FeatureCache"]


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    entries: int = 0


def _autocast_namespace(device: torch.device) -> str:
    if torch.is_autocast_enabled(device.type):
        return f"{device.type}:{torch.get_autocast_dtype(device.type)}"
    return f"{device.type}:off"


class FeatureCache:
    """Feature vectors (D,) of a frozen tower keyed by string, at most ``max_entries`` per namespace.

    ``get_or_compute(keys, compute, device)`` returns (B, D): when every key is cached the rows
    are stacked; otherwise ``compute()`` runs on the whole batch (exactly as without a cache)
    and the missing rows are stored.
    """

    def __init__(self, max_entries: int | None = None) -> None:
        self.max_entries = max_entries
        self._store: dict[str, dict[str, torch.Tensor]] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return sum(len(v) for v in self._store.values())

    def clear(self) -> None:
        self._store.clear()
        self.stats = CacheStats()

    def get_or_compute(
        self, keys: Sequence[str], compute: Callable[[], torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        table = self._store.setdefault(_autocast_namespace(device), {})
        rows = [table.get(k) for k in keys]
        if all(r is not None for r in rows):
            self.stats.hits += len(keys)
            return torch.stack([r.to(device) for r in rows if r is not None])
        out = compute()
        if out.ndim != 2 or out.shape[0] != len(keys):
            raise ValueError(f"frozen tower returned shape {tuple(out.shape)} for {len(keys)} inputs")
        detached = out.detach()
        for i, (key, row) in enumerate(zip(keys, rows, strict=True)):
            if row is None:
                self.stats.misses += 1
                if self.max_entries is None or len(table) < self.max_entries:
                    table[key] = detached[i].clone()
            else:
                self.stats.hits += 1
        self.stats.entries = len(self)
        return out
