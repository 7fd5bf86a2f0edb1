"""Callbacks, early stopping and per-epoch validation hooks.

A *validation hook* is any callable ``hook(ctx: ValidationContext) -> dict[str, float]``; the
trainer prefixes each returned name with ``val/`` (unless it already starts with ``val/``) and
logs it in the epoch record. It runs at epoch 0 (before any update, the baseline) and every
``val_every_n_epochs`` epochs. :class:`ObjectiveValidation` (the objective's terms on the
validation set, no augmentation, model in eval mode) is the default; the evaluation suite
provides retrieval/classification hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch
from torch import nn

from medvl.training.accumulation import batch_size_of

if TYPE_CHECKING:
    from lightning_fabric import Fabric

__all__ = [
    "Callback",
    "EarlyStopping",
    "EpochSummary",
    "ObjectiveValidation",
    "ValidationContext",
    "ValidationHook",
    "headline_metrics",
]


class Callback:
    """Base class: override any hook. ``trainer`` is the running :class:`~medvl.training.Trainer`."""

    def on_fit_start(self, trainer: Any) -> None:
        """After setup and resume, before the baseline validation."""

    def on_train_step_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        """After each optimizer step; ``record`` holds the step's terms, lr and counters."""

    def on_epoch_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        """After each epoch's validation and checkpoint (also after the epoch-0 baseline)."""

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        """After the run finished (completed, early-stopped or stopped on a non-finite loss)."""


#: Validation metrics shown per epoch when none are named: the loss, Recall@5 (else @1) both ways,
#: MRR image→text, and per classification task its first summary of mAP / balanced accuracy / κ.
_HEADLINE_SUFFIXES = ("map_macro", "balanced_accuracy", "kappa")


def headline_metrics(record: Mapping[str, Any], monitor: str | None = None) -> list[str]:
    """The validation metrics worth one terminal line: ``val/loss``, the monitored metric, retrieval
    R@5 (else R@1) both ways and i2t MRR, and one headline classification metric per task."""
    keys = [k for k in record if k.startswith("val/")]
    chosen = ["val/loss"]
    if monitor:
        chosen.append(monitor)
    for direction in ("i2t", "t2i"):
        for k in (5, 1):
            if f"val/retrieval/{direction}/recall@{k}" in record:
                chosen.append(f"val/retrieval/{direction}/recall@{k}")
                break
    chosen.append("val/retrieval/i2t/mrr")
    tasks = dict.fromkeys(k.split("/")[2] for k in keys if k.startswith("val/classification/") and k.count("/") >= 3)
    for task in tasks:
        for suffix in _HEADLINE_SUFFIXES:
            if f"val/classification/{task}/{suffix}" in record:
                chosen.append(f"val/classification/{task}/{suffix}")
                break
    return [k for k in dict.fromkeys(chosen) if k in record]


class EpochSummary(Callback):
    """One line per epoch with the training loss and the validation metrics (``medvl train`` and sweeps).

    ``metrics=None`` shows :func:`headline_metrics`; ``prefix`` starts every line (a sweep cell's key,
    so lines of cells running side by side stay attributable). Printed by process 0 only.
    """

    def __init__(self, metrics: Sequence[str] | None = None, log: Callable[[str], None] | None = None,
                 prefix: str = "", monitor: str | None = None) -> None:
        self.metrics = list(dict.fromkeys(metrics)) if metrics is not None else None
        self.log = log if log is not None else (lambda line: print(line, flush=True))
        self.prefix = prefix
        self.monitor = monitor

    def format(self, record: Mapping[str, Any]) -> str:
        """The line for one epoch record."""
        names = self.metrics if self.metrics is not None else headline_metrics(record, self.monitor)
        shown = [f"{name.removeprefix('val/')} {record[name]:.4g}" for name in names
                 if isinstance(record.get(name), (int, float)) and not isinstance(record.get(name), bool)]
        loss = record.get("train/loss")
        head = f"{self.prefix}epoch {record.get('epoch')}"
        head += f": train loss {loss:.4f}" if isinstance(loss, float) else " (before training)"
        return head + (" | val " + ", ".join(shown) if shown else "")

    def on_epoch_end(self, trainer: Any, record: Mapping[str, Any]) -> None:
        fabric = getattr(trainer, "fabric", None)
        if fabric is not None and not fabric.is_global_zero:
            return
        self.log(self.format(record))


@dataclass
class ValidationContext:
    """What a validation hook gets."""

    model: nn.Module
    """The unwrapped model (put in eval mode by the trainer)."""
    forward: Callable[[Any], tuple[Mapping[str, Any], Mapping[str, torch.Tensor] | None]]
    """``forward(batch) -> (outputs, losses)`` of model + objective under the run's precision."""
    fabric: Fabric
    epoch: int
    global_step: int
    loader: Iterable[Any] | None
    """Validation loader, this process's shard (no padding duplicates); ``None`` without val data."""
    run_dir: Path
    to_device: Callable[[Any], Any] = lambda batch: batch
    """Move a batch to this process's device."""
    extras: dict[str, Any] = field(default_factory=dict)
    padding: Sequence[bool] = ()
    """``padding[i]``: batch ``i`` of ``loader`` only keeps processes in step (FSDP) and must be discarded."""


class ValidationHook(Protocol):
    """``hook(ctx) -> {metric_name: value}``."""

    def __call__(self, ctx: ValidationContext) -> Mapping[str, float]: ...


class ObjectiveValidation:
    """Validation loss: the sample-weighted mean of every objective term over the validation set.

    The loader deals whole batches of ``training.batch_size`` records, in dataset order, to the
    processes (:class:`~medvl.training.sampler.BatchShardSampler`); each process scores its
    batches by itself (the trainer runs hooks inside
    :func:`~medvl.objectives.distributed.local_only`), and the float64 sums ``Σ n_b·term_b`` and
    ``Σ n_b`` are all-reduced once. The result equals a single process's with the same batch size,
    whatever the number of processes and the split size. Names: ``loss`` (the total) and each term.
    """

    def __call__(self, ctx: ValidationContext) -> dict[str, float]:
        if ctx.loader is None:
            return {}
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), dtype=torch.float64, device=ctx.fabric.device)
        with torch.no_grad():
            for index, batch in enumerate(ctx.loader):
                batch = ctx.to_device(batch)
                _, losses = ctx.forward(batch)
                assert losses is not None
                if index < len(ctx.padding) and ctx.padding[index]:
                    continue
                n = batch_size_of(batch)
                count += n
                for name, value in losses.items():
                    if isinstance(value, torch.Tensor) and value.numel() == 1:
                        key = "loss" if name == "total" else name
                        sums[key] = sums.get(key, torch.zeros_like(count)) + value.detach().double() * n
        names = sorted(sums)
        stacked = torch.stack([count, *(sums[k] for k in names)])
        reduced = ctx.fabric.all_reduce(stacked, reduce_op="sum")
        assert isinstance(reduced, torch.Tensor)
        stacked = reduced
        total = float(stacked[0])
        if total == 0:
            return {}
        return {name: float(stacked[i + 1]) / total for i, name in enumerate(names)}


class EarlyStopping:
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` validations.

    The epoch-0 baseline counts as the first reference value. No stop happens before
    ``min_epochs`` training epochs. A missing or non-finite metric counts as no improvement.
    """

    def __init__(self, metric: str, mode: Literal["min", "max"] = "min", patience: int = 5,
                 min_epochs: int = 0, min_delta: float = 0.0) -> None:
        self.metric = metric
        self.mode = mode
        self.patience = patience
        self.min_epochs = min_epochs
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_validations = 0
        self.should_stop = False

    def improved(self, value: float) -> bool:
        """Whether ``value`` beats the best so far (by more than ``min_delta``)."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, epoch: int, metrics: Mapping[str, Any]) -> bool:
        """Feed one validation; returns whether it improved. Sets :attr:`should_stop`."""
        value = metrics.get(self.metric)
        if value is None:
            raise KeyError(
                f"early-stopping metric {self.metric!r} is not among the logged metrics {sorted(metrics)}"
            )
        better = self.improved(float(value))
        if better:
            self.best = float(value)
            self.best_epoch = epoch
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        self.should_stop = self.bad_validations >= self.patience and epoch >= self.min_epochs
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch,
                "bad_validations": self.bad_validations, "should_stop": self.should_stop}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.bad_validations = int(state["bad_validations"])
        self.should_stop = bool(state["should_stop"])
