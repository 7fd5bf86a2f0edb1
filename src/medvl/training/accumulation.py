"""Gradient-accumulation helpers: group planning, batch concatenation, feature-cache splicing.

Two modes (``training.contrastive_accumulation``):

* **plain** — each micro-batch's loss is scaled by its share of the group's samples and
  back-propagated; the sum of gradients equals the gradient of the sample-weighted mean loss.
* **feature cache** (open_clip ``accum_freq``) — a no-grad pass caches every micro-batch's model
  outputs; then each micro-batch is re-run with gradients, its fresh outputs are spliced into the
  cached ones and the objective is evaluated on the whole group as one batch (more negatives).
  The torch RNG is replayed so the re-run draws the same dropout masks as the cached pass, so
  the summed gradient equals the full-batch gradient. Outputs that are not per-sample (the logit
  scale, prototypes, …) carry gradient only in the first micro-step, and gradients of the
  objective's own parameters are divided by the group length afterwards, because they see the
  whole group in every micro-step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "FeatureCacheContext",
    "batch_size_of",
    "concat_batches",
    "group_bounds",
    "micro_batch_sizes",
]

#: Output keys never treated as per-sample, whatever their shape.
SHARED_OUTPUT_KEYS: frozenset[str] = frozenset({"logit_scale", "logit_bias"})


def batch_size_of(batch: Any) -> int:
    """Number of samples in a collated batch (``len(batch["ids"])`` or the first tensor's dim 0)."""
    if isinstance(batch, Mapping):
        if "ids" in batch:
            return len(batch["ids"])
        for value in batch.values():
            try:
                return batch_size_of(value)
            except ValueError:
                continue
    if isinstance(batch, torch.Tensor) and batch.ndim > 0:
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        if isinstance(batch[0], torch.Tensor):
            return batch_size_of(batch[0])
        return len(batch)
    raise ValueError(f"cannot tell the batch size of a {type(batch).__name__}")


def micro_batch_sizes(samples: int, batch_size: int, drop_last: bool) -> list[int]:
    """Sizes of an epoch's micro-batches for ``samples`` samples of one replica."""
    full, rest = divmod(samples, batch_size)
    return [batch_size] * full + ([rest] if rest and not drop_last else [])


def group_bounds(batch_index: int, n_batches: int, accumulate: int) -> tuple[int, int]:
    """``(first, end)`` micro-batch indices of the accumulation group holding ``batch_index``.

    The last group of an epoch may be shorter than ``accumulate``; it still ends in an optimizer step.
    """
    first = (batch_index // accumulate) * accumulate
    return first, min(first + accumulate, n_batches)


def _pad_to(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if list(tensor.shape[1:]) == list(shape):
        return tensor
    pads: list[int] = []
    for have, want in zip(reversed(tensor.shape[1:]), reversed(shape), strict=True):
        pads.extend([0, want - have])
    return F.pad(tensor, pads, value=False if tensor.dtype == torch.bool else 0)


def _concat_values(values: Sequence[Any]) -> Any:
    first = values[0]
    if isinstance(first, Mapping):
        return {key: _concat_values([v[key] for v in values]) for key in first}
    if isinstance(first, torch.Tensor):
        if first.ndim == 0:
            return first
        trailing = [max(v.shape[d] for v in values) for d in range(1, first.ndim)]
        return torch.cat([_pad_to(v, trailing) for v in values], dim=0)
    if isinstance(first, list):
        return [item for value in values for item in value]
    if isinstance(first, tuple):
        return tuple(item for value in values for item in value)
    return first


def concat_batches(batches: Sequence[Any]) -> Any:
    """Concatenate collated batches along the sample axis (dicts recursively, lists joined).

    Tensors whose trailing dimensions differ (feature bags of different sizes) are zero/False
    padded to the largest, matching the collate convention ``bag`` + ``bag_mask``.
    """
    if not batches:
        raise ValueError("no batches to concatenate")
    return batches[0] if len(batches) == 1 else _concat_values(batches)


def _is_per_sample(key: str, value: Any, size: int) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and value.ndim > 0
        and value.shape[0] == size
        and key.rsplit(".", 1)[-1] not in SHARED_OUTPUT_KEYS
    )


class FeatureCacheContext:
    """Cached outputs of a group and the index of the micro-batch being re-run with gradients.

    Deliberately not a dataclass, so DDP's input handling passes it through untouched.
    """

    def __init__(self, cached: Sequence[Mapping[str, Any]], sizes: Sequence[int], full_batch: Any,
                 shared_keys: frozenset[str] = frozenset()) -> None:
        self.cached = list(cached)
        self.sizes = list(sizes)
        self.full_batch = full_batch
        self.index = 0
        self.shared_keys = shared_keys

    def splice(self, fresh: Mapping[str, Any]) -> dict[str, Any]:
        """Whole-group outputs with micro-batch ``index`` replaced by ``fresh`` (which carries gradient)."""
        return self._splice(fresh, [dict(c) for c in self.cached], "")

    def _splice(self, fresh: Mapping[str, Any], cached: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        size = self.sizes[self.index]
        for key, value in fresh.items():
            name = prefix + key
            if isinstance(value, Mapping):
                out[key] = self._splice(value, [dict(c[key]) for c in cached], name + ".")
            elif name not in self.shared_keys and _is_per_sample(name, value, size):
                parts = [c[key] for c in cached]
                parts[self.index] = value
                trailing = [max(p.shape[d] for p in parts) for d in range(1, value.ndim)]
                out[key] = torch.cat([_pad_to(p, trailing) for p in parts], dim=0)
            elif isinstance(value, torch.Tensor) and self.index > 0:
                out[key] = value.detach()
            else:
                out[key] = value
        return out
