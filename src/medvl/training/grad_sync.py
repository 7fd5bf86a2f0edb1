"""DDP's gradient all-reduce with a small payload riding along: the trainer's per-step check.

Every optimizer step the trainer must know, on every process, whether any process's loss was
non-finite (so that all stop together and none applies the update), and the global sums behind
the ``train/*`` means. Sent on their own, these few numbers cost a second collective per step —
one more round trip between processes, measurable on small models and slow interconnects
(``benchmarks/trainer_overhead --processes 2``). :class:`PayloadAllReduce` is a DDP communication
hook (``DistributedDataParallel.register_comm_hook``) that reduces the gradient buckets exactly as
DDP's default reduction does — each bucket divided by the world size, then summed — and appends the
payload to the first bucket (DDP's smallest, ``bucket.index() == 0``), so the numbers arrive with the
gradients in the same collective. Gradients are bit-identical to DDP without a hook (tested).

The payload travels in the bucket's dtype (float32 gradients: sums carry float32 rounding, relative
error ≤ 6e-8; the non-finite flag and sample counts below 2**24 are exact). A first bucket of another
dtype (``bf16-true``/``16-true`` weights) takes no payload, nor does a backward that reduces no
bucket: :meth:`PayloadAllReduce.take` then returns ``None`` and the caller reduces the payload on its
own (every process takes the same path: the buckets are the same on all of them).
"""

# no ``from __future__ import annotations``: DDP checks the hook's annotations as objects

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["PayloadAllReduce"]

_PAYLOAD_DTYPES = (torch.float32, torch.float64)


class PayloadAllReduce:
    """A DDP comm hook state: default-equivalent gradient averaging plus one payload per backward.

    Usage: ``state = PayloadAllReduce(); ddp.register_comm_hook(state, PayloadAllReduce.hook)``; before
    a synchronising backward ``state.attach(payload)``; after it ``state.take()`` returns the payload
    summed over processes (in the payload's dtype), or ``None`` when no bucket carried it.
    """

    def __init__(self, process_group: Any = None) -> None:
        self.process_group = process_group
        self._pending: torch.Tensor | None = None
        self._result: torch.Tensor | None = None

    def attach(self, payload: torch.Tensor) -> None:
        """Send ``payload`` (flattened) with the next backward's first bucket."""
        self._pending, self._result = payload.reshape(-1), None

    def take(self) -> "torch.Tensor | None":
        """The summed payload of the last backward, or ``None`` when it was not sent; clears both slots."""
        result, self._pending, self._result = self._result, None, None
        return result

    def _finish(self, flat: torch.Tensor, n: int, payload_dtype: torch.dtype) -> torch.Tensor:
        self._result = flat[n:].to(payload_dtype)
        return flat[:n]

    @staticmethod
    def hook(state: "PayloadAllReduce", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        """The communication hook (DDP calls it once per bucket during backward)."""
        group = state.process_group if state.process_group is not None else dist.group.WORLD
        world = dist.get_world_size(group)
        grads = bucket.buffer()
        payload = state._pending
        if payload is None or bucket.index() != 0 or grads.dtype not in _PAYLOAD_DTYPES:
            grads.mul_(1.0 / world)  # DDP's default reduction: Σ gradient·(1 / world size), bit for bit
            work = dist.all_reduce(grads, group=group, async_op=True)
            return work.get_future().then(lambda fut: fut.value()[0])
        state._pending = None
        n = grads.numel()
        flat = torch.cat([grads.mul_(1.0 / world), payload.to(device=grads.device, dtype=grads.dtype)])
        work = dist.all_reduce(flat, group=group, async_op=True)
        return work.get_future().then(lambda fut: state._finish(fut.value()[0], n, payload.dtype))
