"""Embedding extraction shared out over the processes of a distributed run, with exact results.

:class:`BatchShardedEncoder` wraps any embedding model (the extraction protocol: ``encode_images``
and ``encode_texts``). Every process walks the same batches in the same order, but only the
owner of a batch (batch ``i`` → process ``i mod R``) runs the model on it; the others return zeros
of the right shape. :func:`reduce_embedding_set` then sums the arrays over processes. Each batch is
encoded exactly as a single process would encode it, and ``x + 0 = x`` exactly, so the result is
bit-identical to single-process extraction (ties between equal captions stay exact ties) while the
model work is divided by the number of processes.

Collectives: one broadcast of the output shapes on the first image and the first text call, and
one all-reduce per array at the end. Every process must extract the same dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from medvl.evaluation.embeddings import EmbeddingSet

__all__ = ["BatchShardedEncoder", "reduce_embedding_set"]


class BatchShardedEncoder:
    """``model`` encoding only the batches this process owns (see the module docstring)."""

    def __init__(self, model: Any, rank: int, world: int, device: torch.device | None = None) -> None:
        self.model = model
        self.rank = rank
        self.world = world
        self.device = device or torch.device("cpu")
        self._image_calls = 0
        self._text_calls = 0
        self._image_shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] | None = None
        self._text_shapes: list[tuple[tuple[int, ...], torch.dtype] | None] | None = None

    def __getattr__(self, name: str) -> Any:  # identity, logit_scale, has_text, image_transform, …
        return getattr(self.model, name)

    def _shapes(self, value: Any) -> Any:
        """Rank 0's output shapes (it owns call 0), broadcast to every process."""
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type != "cpu" else None)
        return box[0]

    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        call, self._image_calls = self._image_calls, self._image_calls + 1
        mine = call % self.world == self.rank
        out = self.model.encode_images(batch) if mine else None
        if self._image_shapes is None:
            local = {k: (tuple(v.shape[1:]), v.dtype) for k, v in out.items()} if out is not None else None
            self._image_shapes = self._shapes(local)
        if out is not None:
            return out
        n = len(batch["ids"])
        assert self._image_shapes is not None
        return {k: torch.zeros((n, *shape), dtype=dtype) for k, (shape, dtype) in self._image_shapes.items()}

    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        call, self._text_calls = self._text_calls, self._text_calls + 1
        mine = call % self.world == self.rank
        out = self.model.encode_texts(texts) if mine else None
        if self._text_shapes is None:
            local = [None if t is None else (tuple(t.shape[1:]), t.dtype) for t in out] if out is not None else None
            self._text_shapes = self._shapes(local)
        if out is not None:
            return out
        assert self._text_shapes is not None
        zeros = [None if spec is None else torch.zeros((len(texts), *spec[0]), dtype=spec[1])
                 for spec in self._text_shapes]
        assert zeros[0] is not None
        return zeros[0], zeros[1]


def _sum(array: np.ndarray, device: torch.device, all_reduce: Callable[[torch.Tensor], Any]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    reduced = all_reduce(tensor)
    out = reduced if isinstance(reduced, torch.Tensor) else tensor
    return out.cpu().numpy().astype(array.dtype, copy=False)


def reduce_embedding_set(emb: EmbeddingSet, device: torch.device | None = None,
                         all_reduce: Callable[[torch.Tensor], Any] | None = None) -> EmbeddingSet:
    """Sum the model outputs of an extraction by :class:`BatchShardedEncoder` over every process."""
    device = device or torch.device("cpu")
    reduce: Callable[[torch.Tensor], Any] = all_reduce or (lambda t: dist.all_reduce(t))
    emb.image_emb = _sum(emb.image_emb, device, reduce)
    emb.text_emb = _sum(emb.text_emb, device, reduce)
    if emb.image_features is not None:
        emb.image_features = _sum(emb.image_features, device, reduce)
    if emb.text_features is not None:
        emb.text_features = _sum(emb.text_features, device, reduce)
    emb.logits = {name: _sum(value, device, reduce) for name, value in sorted(emb.logits.items())}
    return emb
