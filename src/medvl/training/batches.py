"""The trainer's data side: its training and validation loaders and the batch helpers they need.

Batches are nested dicts/lists/tuples of tensors (and plain values) as the collate functions of
:mod:`medvl.data` build them; a batch may list the records skipped under ``on_bad_sample: skip``
(``batch["skipped"]``), which the loaders note in their dataset so that the run reports them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from medvl.config.training import TrainConfig
from medvl.data.dataset import track_skips
from medvl.training.sampler import BatchShardSampler, ResumableSampler

__all__ = [
    "SkipNotingLoader",
    "check_not_all_skipped",
    "detach_tree",
    "seed_worker",
    "split_data",
    "to_device",
    "train_loader",
    "validation_loader",
]


def seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def split_data(data: Dataset[Any] | DataLoader[Any], collate_fn: Callable[..., Any] | None
               ) -> tuple[Dataset[Any], Callable[..., Any] | None]:
    """``(dataset, collate_fn)`` of a dataset or a DataLoader (an explicit ``collate_fn`` wins)."""
    if isinstance(data, DataLoader):
        return data.dataset, collate_fn or data.collate_fn
    return data, collate_fn


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor (in nested dicts/lists/tuples) on ``device`` (non-blocking copies)."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    return value


def detach_tree(value: Any) -> Any:
    """``value`` with every tensor (in nested dicts) detached from the autograd graph."""
    if isinstance(value, Mapping):
        return {k: detach_tree(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach()
    return value


class SkipNotingLoader:
    """A re-iterable loader whose batches' ``skipped`` records are noted in ``dataset`` (main process)."""

    def __init__(self, loader: DataLoader[Any], dataset: Any) -> None:
        self.loader = loader
        self.dataset = dataset

    def __iter__(self) -> Any:
        return track_skips(iter(self.loader), self.dataset)

    def __len__(self) -> int:
        return len(self.loader)


def check_not_all_skipped(dataset: Any, what: str) -> None:
    """Raise (through the dataset's own check, when it has one) if every record of ``what`` was skipped."""
    check = getattr(dataset, "check_not_all_skipped", None)
    if callable(check):
        check(what)


def train_loader(dataset: Dataset[Any], sampler: ResumableSampler, cfg: TrainConfig,
                 collate_fn: Callable[..., Any] | None, *, seed: int, epoch: int, start: int) -> Iterator[Any]:
    """An iterator over the training batches of ``epoch``, from sample ``start`` of this process's order on.

    The sampler, the dataset's per-item seeds (``set_epoch`` when it has one) and the loader's
    generator all follow ``(seed, epoch, start)``, so a resumed epoch draws what the uninterrupted
    one would have; skipped records are noted in ``dataset``.
    """
    sampler.set_epoch(epoch, start)
    set_epoch = getattr(dataset, "set_epoch", None)
    if callable(set_epoch):  # per-item seeds (caption choice, augmentation) follow the epoch
        set_epoch(epoch)
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 10_007 + start) % 2**63)
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=cfg.drop_last,
        collate_fn=collate_fn,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
        generator=generator,
        worker_init_fn=seed_worker if cfg.num_workers > 0 else None,
    )
    return track_skips(iter(loader), dataset)


def validation_loader(dataset: Dataset[Any], cfg: TrainConfig, collate_fn: Callable[..., Any] | None, *,
                      world_size: int, rank: int, pad: bool) -> tuple[SkipNotingLoader, list[bool]]:
    """This process's share of the validation batches, and which of them are padding.

    Each process scores whole batches (:class:`~medvl.training.sampler.BatchShardSampler`); with
    ``pad`` (FSDP, which gathers parameters in every forward) every process runs equally many,
    the extra ones flagged ``True`` in the returned list.
    """
    batches = BatchShardSampler(len(dataset), cfg.batch_size,  # type: ignore[arg-type,unused-ignore]
                                num_replicas=world_size, rank=rank, pad=pad)
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_fn,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
    )
    return SkipNotingLoader(loader, dataset), batches.padding
