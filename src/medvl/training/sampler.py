"""A sampler whose position can be saved and restored mid-epoch (exact resume), DDP-aware.

The order of epoch ``e`` is a permutation drawn from a generator seeded with ``seed + e``
(independent of any global RNG), padded by wrap-around to a multiple of the number of replicas
and dealt out round-robin, like ``torch.utils.data.DistributedSampler``. ``start`` skips the
samples this replica already consumed in the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

__all__ = ["BatchShardSampler", "ResumableSampler", "ShardSampler"]


class ResumableSampler(Sampler[int]):
    """Indices of one replica for one epoch, starting after ``start`` consumed samples."""

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if num_samples <= 0:
            raise ValueError(f"cannot sample from an empty dataset (num_samples={num_samples})")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0

    @property
    def samples_per_replica(self) -> int:
        """Samples one replica sees in a full epoch (after padding)."""
        return math.ceil(self.num_samples / self.num_replicas)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip the first ``start`` samples of this replica."""
        if not 0 <= start <= self.samples_per_replica:
            raise ValueError(f"start {start} is outside [0, {self.samples_per_replica}]")
        self.epoch = epoch
        self.start = start

    def epoch_indices(self) -> list[int]:
        """This replica's full index list for the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed((self.seed + self.epoch) % 2**63)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.samples_per_replica * self.num_replicas
        while len(order) < total:
            order.extend(order[: total - len(order)])
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start :])

    def __len__(self) -> int:
        return self.samples_per_replica - self.start

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position."""
        return {
            "num_samples": self.num_samples,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "epoch": self.epoch,
            "start": self.start,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`; the dataset and world size must match."""
        for key in ("num_samples", "num_replicas", "shuffle"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume: sampler {key} was {state[key]} when the checkpoint was written, "
                    f"now {getattr(self, key)} (same dataset and number of processes are required)"
                )
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]), int(state["start"]))


class ShardSampler(Sampler[int]):
    """Evaluation sharding: replica ``rank`` takes indices ``rank, rank + R, …`` in order, no padding."""

    def __init__(self, num_samples: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, num_samples, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class BatchShardSampler(Sampler[list[int]]):
    """Evaluation batches in dataset order, dealt whole and round-robin to the processes.

    Batch ``b`` holds indices ``[b·B, (b+1)·B)`` (the last may be shorter), exactly as one process
    would batch the dataset; process ``rank`` takes batches ``rank, rank + R, …``. Every batch is
    therefore the one a single process sees, whatever the number of processes (a batch-dependent
    loss such as CLIP's equals the single-process value), and processes may get different numbers
    of batches, or none. With ``pad`` (FSDP, whose forward passes are collectives) every process
    gets equally many: missing ones are repeats of batch 0 whose results the caller discards
    (``padding[i]`` is True for them).
    """

    def __init__(self, num_samples: int, batch_size: int, *, num_replicas: int = 1, rank: int = 0,
                 pad: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        starts = range(0, num_samples, batch_size)
        every = [list(range(s, min(s + batch_size, num_samples))) for s in starts]
        self.batches = every[rank::num_replicas]
        self.padding = [False] * len(self.batches)
        if pad and every:  # equally many batches everywhere: repeats of the first batch, to be discarded
            while len(self.batches) < -(-len(every) // num_replicas):
                self.batches.append(every[0])
                self.padding.append(True)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
