"""All-gather of per-rank batch rows, with gradient, for losses computed as local rows × global columns.

Scheme (open_clip's ``local_loss`` + ``gather_with_grad``): each rank gathers the features of
every rank with an autograd-aware all-gather, scores its **local** rows against the **global**
columns, and returns ``world · Σ_local-rows ℓ / N_global``. The mean of these values over ranks
is the single-process loss on the global batch, and because DDP averages gradients over ranks
and the all-gather's backward sums the column gradients back to their owner, the averaged
gradient equals the global-batch gradient. Per-rank batches may differ in size (a last partial
batch): rows are padded to the largest size for the collective and stripped again.

Outside ``torch.distributed`` (or with ``enabled=False``, or inside :func:`local_only`) nothing is
communicated and the "global" batch is the local one. Validation runs inside :func:`local_only`:
each process scores whole batches by itself, so processes may run different numbers of batches.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["GatheredRows", "gather_rows", "local_only", "world_info"]

_local = threading.local()


@contextmanager
def local_only() -> Iterator[None]:
    """Inside this block every loss treats the local batch as the whole batch (no collectives)."""
    previous = getattr(_local, "active", False)
    _local.active = True
    try:
        yield
    finally:
        _local.active = previous


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed or :func:`local_only`."""
    if dist.is_available() and dist.is_initialized() and not getattr(_local, "active", False):
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class GatheredRows:
    """Rows of every rank concatenated in rank order.

    ``tensors[k]`` is the global version of the k-th input, ``offset`` the index of this rank's
    first row in it, ``local`` this rank's number of rows, ``total`` the global number of rows
    and ``world`` the number of ranks taking part (1 when nothing was gathered).
    """

    tensors: tuple[Tensor, ...]
    offset: int
    local: int
    total: int
    world: int

    def local_indices(self, device: torch.device) -> Tensor:
        """Global indices of this rank's rows."""
        return torch.arange(self.offset, self.offset + self.local, device=device)


def _all_gather_sizes(n: int, device: torch.device) -> list[int]:
    size = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _gather_padded(x: Tensor, sizes: list[int], with_grad: bool) -> Tensor:
    max_n = max(sizes)
    if x.shape[0] < max_n:
        pad = x.new_zeros((max_n - x.shape[0], *x.shape[1:]))
        padded = torch.cat([x, pad], dim=0)
    else:
        padded = x.contiguous()
    if with_grad and x.requires_grad:
        from torch.distributed.nn.functional import all_gather as all_gather_autograd

        parts = list(all_gather_autograd(padded))
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        # keep this rank's own slice connected to the graph (it may still require grad)
        parts[dist.get_rank()] = padded
    return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)], dim=0)


def gather_rows(*tensors: Tensor, enabled: bool = True, with_grad: bool = True) -> GatheredRows:
    """Gather tensors that share their first (batch) dimension from every rank.

    Tensors that require grad are gathered through an autograd all-gather whose backward
    returns to each rank the sum over ranks of the gradients of its own rows; others are
    gathered without autograd. With ``enabled=False`` or a single process, returns the inputs.
    """
    if not tensors:
        raise ValueError("gather_rows needs at least one tensor")
    n = tensors[0].shape[0]
    for t in tensors[1:]:
        if t.shape[0] != n:
            raise ValueError(f"gather_rows: tensors disagree on the batch size ({n} vs {t.shape[0]})")
    rank, world = world_info()
    if not enabled or world == 1:
        return GatheredRows(tensors=tuple(tensors), offset=0, local=n, total=n, world=1)
    sizes = _all_gather_sizes(n, tensors[0].device)
    gathered = tuple(_gather_padded(t, sizes, with_grad) for t in tensors)
    return GatheredRows(tensors=gathered, offset=sum(sizes[:rank]), local=n, total=sum(sizes), world=world)
