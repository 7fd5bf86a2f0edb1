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

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = ["CacheStats", "FeatureCache", "module_fingerprint"]


def module_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's state (names, dtypes, shapes and bytes): equal iff the weights are equal."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


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

    def save(self, path: str | os.PathLike[str], fingerprint: str) -> int:
        """Write every entry to ``path`` (safetensors, atomic) tagged with the tower's ``fingerprint``.

        Lets separate runs that share a frozen tower (the cells of a λ sweep) share its features.
        Returns the number of entries written.
        """
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        keys: dict[str, list[str]] = {}
        for index, (namespace, table) in enumerate(sorted(self._store.items())):
            if not table:
                continue
            names = sorted(table)
            tensors[f"ns{index}"] = torch.stack([table[k].to("cpu") for k in names]).contiguous()
            keys[f"ns{index}"] = [namespace, *names]
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata={"fingerprint": fingerprint, "keys": json.dumps(keys)})
        os.replace(tmp, target)
        return sum(len(v) - 1 for v in keys.values())

    def load(self, path: str | os.PathLike[str], fingerprint: str) -> int:
        """Add the entries saved at ``path`` when they were computed by the same tower weights.

        A missing file or a different ``fingerprint`` loads nothing (returns 0): features of other
        weights are never used. Entries already present are kept.
        """
        from safetensors import safe_open

        source = Path(path)
        if not source.is_file():
            return 0
        loaded = 0
        with safe_open(str(source), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("fingerprint") != fingerprint:
                return 0
            for name, (namespace, *names) in json.loads(meta["keys"]).items():
                rows = handle.get_tensor(name)
                table = self._store.setdefault(namespace, {})
                for key, row in zip(names, rows, strict=True):
                    if key not in table and (self.max_entries is None or len(table) < self.max_entries):
                        table[key] = row.clone()
                        loaded += 1
        self.stats.entries = len(self)
        return loaded

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
