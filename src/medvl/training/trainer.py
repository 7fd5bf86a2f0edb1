"""The training loop: Lightning Fabric, accumulation, validation hooks, checkpoint/resume, logs.

Works with any ``nn.Module`` model whose ``forward(batch)`` returns a dict of named outputs and
any objective whose ``forward(outputs, batch)`` returns ``{"total": …, "<term>": …}`` (DESIGN.md
contracts), on any map-style dataset with a collate function.

Counting: epochs are numbered from 1; epoch 0 is the validation before any update (the
baseline). ``global_step`` counts optimizer steps. Checkpoints are written at optimizer-step
boundaries (every ``checkpoint.every_n_steps`` steps and at the end of every epoch); resuming
from one restores weights, optimizer, scheduler, the sampler's position within the epoch,
every RNG, the running epoch sums and the early-stopping state, so the resumed run continues
exactly as the uninterrupted one (bit-for-bit on CPU with ``deterministic: true`` and
``num_workers: 0``; with worker processes, augmentations drawn inside workers are re-seeded
per epoch and position, not replayed).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from medvl import __version__
from medvl.config.training import TrainConfig
from medvl.data.dataset import track_skips
from medvl.models.weights import EMA_WEIGHTS_FILE, evaluation_weights
from medvl.objectives.distributed import local_only
from medvl.training.accumulation import (
    FeatureCacheContext,
    batch_size_of,
    concat_batches,
    group_bounds,
    micro_batch_sizes,
)
from medvl.training.callbacks import (
    Callback,
    EarlyStopping,
    ObjectiveValidation,
    ValidationContext,
    ValidationHook,
)
from medvl.training.checkpoint import (
    CheckpointError,
    CheckpointManager,
    load_model_weights,
    resolve_checkpoint,
)
from medvl.training.distributed import collective_error
from medvl.training.ema import WeightEMA
from medvl.training.fabric_setup import build_fabric
from medvl.training.grad_sync import PayloadAllReduce
from medvl.training.logging import MetricsLogger, ProgressBar, read_jsonl
from medvl.training.optim import ParamGroupSummary, build_optimizer, build_scheduler
from medvl.training.rng import TorchRNGSnapshot, capture_rng_state, restore_rng_state
from medvl.training.sampler import BatchShardSampler, ResumableSampler
from medvl.training.sharding import is_sharded
from medvl.training.task import TrainTask
from medvl.utils.errors import UserInputError
from medvl.utils.io import atomic_write_json, read_json, to_jsonable
from medvl.utils.seeding import seed_everything, set_deterministic

if TYPE_CHECKING:
    from lightning_fabric import Fabric

__all__ = ["FitResult", "NonFiniteLossError", "Trainer"]

RESULT_FILE = "training_result.json"
#: Model/objective methods called after every optimizer step when present (e.g. clamping the logit scale).
POST_STEP_METHODS: tuple[str, ...] = ("clamp_", "after_optimizer_step", "clamp_logit_scale")


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the run stopped without writing a checkpoint."""

    def __init__(self, message: str, *, epoch: int, step: int, terms: Mapping[str, float],
                 last_checkpoint: str | None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.terms = dict(terms)
        self.last_checkpoint = last_checkpoint


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit` (also written to ``RUN_DIR/training_result.json``)."""

    status: str
    """``completed``, ``early_stopped`` or ``non_finite_loss``."""
    epochs_completed: int
    global_step: int
    best: dict[str, Any] | None
    last_checkpoint: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "epochs_completed": self.epochs_completed,
            "global_step": self.global_step,
            "best": self.best,
            "last_checkpoint": self.last_checkpoint,
            "message": self.message,
        }


@dataclass
class _Position:
    epoch: int = 1
    batch: int = 0
    global_step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    samples: float = 0.0


@dataclass
class _FiniteCheck:
    """A started non-finite check: the local flag and, with several processes, the pending all-reduce."""

    finite: torch.Tensor
    buffer: torch.Tensor | None = None
    work: Any = None
    has_payload: bool = False
    #: the buffer rides on DDP's gradient all-reduce (:mod:`medvl.training.grad_sync`)
    with_gradients: bool = False


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and ``random`` in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _split_data(data: Dataset[Any] | DataLoader[Any], collate_fn: Callable[..., Any] | None
                ) -> tuple[Dataset[Any], Callable[..., Any] | None]:
    if isinstance(data, DataLoader):
        return data.dataset, collate_fn or data.collate_fn
    return data, collate_fn


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    return value


class _SkipNotingLoader:
    """A re-iterable loader whose batches' ``skipped`` records are noted in ``dataset`` (main process)."""

    def __init__(self, loader: DataLoader[Any], dataset: Any) -> None:
        self.loader = loader
        self.dataset = dataset

    def __iter__(self) -> Any:
        return track_skips(iter(self.loader), self.dataset)

    def __len__(self) -> int:
        return len(self.loader)


def _check_not_all_skipped(dataset: Any, what: str) -> None:
    check = getattr(dataset, "check_not_all_skipped", None)
    if callable(check):
        check(what)


def _detach_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _detach_tree(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.detach()
    return value


class Trainer:
    """Fits a model with an objective; see the module docstring.

    Args:
        cfg: the ``training`` section.
        run_dir: where checkpoints, logs and ``training_result.json`` go (must exist).
        seed: the run seed (sampling order, per-process RNG).
        fabric: an already launched Fabric; built from ``cfg`` and launched when ``None``.
        validation_hooks: per-epoch validation; default: the objective's terms on the val set.
        callbacks: extra :class:`~medvl.training.callbacks.Callback` objects.
        provenance: extra JSON recorded in ``training_result.json`` (config, data hash, …).
        gradient_probe: object with ``due(step) -> bool`` and ``measure(losses, params, weights)
            -> dict`` (:class:`medvl.objectives.GradientProbe`); measured on the first micro-batch
            of due steps, before backward, and written to ``logs/grad_probe.jsonl``.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        seed: int = 0,
        fabric: Fabric | None = None,
        validation_hooks: Sequence[ValidationHook] | None = None,
        callbacks: Sequence[Callback] = (),
        provenance: Mapping[str, Any] | None = None,
        gradient_probe: Any = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.fabric = fabric
        self.validation_hooks: list[ValidationHook] = (
            list(validation_hooks) if validation_hooks is not None else [ObjectiveValidation()]
        )
        self.callbacks = list(callbacks)
        self.provenance = dict(provenance or {})
        self.gradient_probe = gradient_probe
        self.param_groups: ParamGroupSummary | None = None
        self.history: list[dict[str, Any]] = []
        self.position = _Position()
        self.phase = "setup"
        """What the processes are doing (named by collective errors): training step, validation, checkpoint."""

    # ------------------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        objective: nn.Module,
        train_data: Dataset[Any] | DataLoader[Any],
        val_data: Dataset[Any] | DataLoader[Any] | None = None,
        *,
        collate_fn: Callable[..., Any] | None = None,
        resume: bool = False,
    ) -> FitResult:
        """Train ``model`` with ``objective``; resume from ``RUN_DIR/checkpoints/last`` when ``resume``.

        Raises :class:`NonFiniteLossError` (after writing ``training_result.json``) when a loss
        becomes non-finite; the last checkpoint written before it is left untouched.
        """
        cfg = self.cfg
        if self.fabric is None:
            self.fabric = build_fabric(cfg)
        fabric = self.fabric
        self.rank, self.world_size = fabric.global_rank, fabric.world_size
        if cfg.deterministic:
            set_deterministic(True)
        seed_everything(self.seed + self.rank)

        train_set, train_collate = _split_data(train_data, collate_fn)
        self.train_set, self.train_collate = train_set, train_collate
        self.val_set: Dataset[Any] | None = None
        self.val_collate: Callable[..., Any] | None = None
        self.init_missing: list[str] = []
        if val_data is not None:
            self.val_set, self.val_collate = _split_data(val_data, collate_fn)
        self.model, self.objective = model, objective
        self.task = TrainTask(model, objective)
        self.sharded = is_sharded(fabric)
        if self.sharded:  # FSDP: parameters become shards first, the optimizer is built on them
            if cfg.ema.enabled or self.gradient_probe is not None:
                raise ValueError("training.strategy=fsdp does not support training.ema or the gradient probe yet")
            self.task_w = fabric.setup_module(self.task)
        optimizer, self.param_groups = build_optimizer(self.task, cfg.optimizer)
        self.sampler = ResumableSampler(len(train_set), shuffle=True, seed=self.seed,  # type: ignore[arg-type]
                                        num_replicas=self.world_size, rank=self.rank)
        self.batch_sizes = micro_batch_sizes(self.sampler.samples_per_replica, cfg.batch_size, cfg.drop_last)
        if not self.batch_sizes:
            raise ValueError(
                f"the training set has {self.sampler.samples_per_replica} samples per process, fewer than "
                f"training.batch_size={cfg.batch_size} with drop_last=true: no batch to train on"
            )
        self.n_batches = len(self.batch_sizes)
        self.steps_per_epoch = math.ceil(self.n_batches / cfg.accumulate_grad_batches)
        self.scheduler, self.schedule = build_scheduler(optimizer, cfg.schedule,
                                                        steps_per_epoch=self.steps_per_epoch, epochs=cfg.epochs)
        self.optimizer = optimizer
        if self.sharded:
            wrapped: Any = fabric.setup_optimizers(optimizer)
            self.optimizer_w = wrapped
        else:
            self.task_w, self.optimizer_w = fabric.setup(self.task, optimizer)
        self._module: nn.Module = getattr(self.task_w, "_forward_module", self.task_w)
        self._grad_payload: PayloadAllReduce | None = None
        if isinstance(self._module, DistributedDataParallel):  # the per-step check rides on the gradients
            self._grad_payload = PayloadAllReduce(self._module.process_group)
            self._module.register_comm_hook(self._grad_payload, PayloadAllReduce.hook)
        if cfg.compile.enabled:  # the training forward; validation calls the plain task
            c = cfg.compile
            compiled: Any = torch.compile(self._module, backend=c.backend, fullgraph=c.fullgraph, dynamic=c.dynamic,
                                          mode=c.mode if c.backend == "inductor" else None)
            self._module = compiled
        self.device = fabric.device
        self.objective_params = [p for p in objective.parameters() if p.requires_grad]

        self.checkpoints = CheckpointManager(self.run_dir, rank=self.rank, world_size=self.world_size,
                                             barrier=fabric.barrier, sharded=self.sharded)
        self.logger = MetricsLogger(self.run_dir, enabled=fabric.is_global_zero,
                                    tensorboard=cfg.logging.tensorboard)
        self.progress = ProgressBar(cfg.logging.progress_bar and fabric.is_global_zero)
        es = cfg.early_stopping
        self.early_stopping = EarlyStopping(es.metric, es.mode, es.patience, es.min_epochs, es.min_delta)
        self.best_tracker = EarlyStopping(cfg.monitor, cfg.monitor_mode, patience=1)
        self.last_checkpoint: str | None = None
        self.position = _Position()

        resumed = False
        if resume and self.checkpoints.has_checkpoint():
            self._restore()
            resumed = True
        else:
            # a fresh start (also --resume of a run killed before its first checkpoint): no old records
            self.logger.truncate(max_step=0, max_epoch=-1)
            if cfg.init_weights is not None:
                init = Path(cfg.init_weights)  # a run or checkpoint: the weights it was evaluated with (its EMA)
                weights = init if init.is_file() else evaluation_weights(resolve_checkpoint(init, "best"))
                self.init_missing = self._load_weights(model, weights, allow_missing=cfg.init_allow_missing)
        self.ema: WeightEMA | None = None
        if cfg.ema.enabled:
            self.ema = WeightEMA(model, cfg.ema.decay, warmup=cfg.ema.warmup)
            if resumed:
                self._restore_ema()

        try:
            for callback in self.callbacks:
                callback.on_fit_start(self)
            status = self._fit_epochs(baseline=not resumed and cfg.validate_at_start)
        except RuntimeError as exc:
            step = self.position.global_step + (1 if self.phase == "a training step" else 0)
            failure = None if self.world_size == 1 else collective_error(
                exc, rank=self.rank, world=self.world_size, phase=self.phase, epoch=self.position.epoch,
                step=step, timeout_s=cfg.collective_timeout_s)
            if failure is None:
                raise
            raise failure from exc
        finally:
            self.progress.close()
        result = self._result(status)
        self._write_result(result)
        self.logger.close()
        for callback in self.callbacks:
            callback.on_fit_end(self, result)
        return result

    # ------------------------------------------------------------------------------------
    def _fit_epochs(self, baseline: bool) -> str:
        cfg = self.cfg
        if self.early_stopping.should_stop:  # resumed after an early stop
            return "early_stopped"
        if baseline:
            baseline_record: dict[str, Any] = {"epoch": 0, "step": 0, **self._validate(0)}
            self._end_epoch(0, baseline_record, validated=True)
            if self.early_stopping.should_stop:
                return "early_stopped"
        for epoch in range(self.position.epoch, cfg.epochs + 1):
            self.position.epoch = epoch
            started = time.perf_counter()
            self._train_epoch(epoch)
            pos = self.position
            record: dict[str, Any] = {"epoch": epoch, "step": pos.global_step, "lr": self._lr()}
            if pos.samples > 0:
                record.update({f"train/{k}": v / pos.samples for k, v in sorted(pos.sums.items())})
            record["train_time_s"] = time.perf_counter() - started
            validated = epoch % cfg.val_every_n_epochs == 0 or epoch == cfg.epochs
            if validated:
                record.update(self._validate(epoch))
            self._end_epoch(epoch, record, validated=validated)
            if self.early_stopping.should_stop:
                return "early_stopped"
        return "completed"

    def _end_epoch(self, epoch: int, record: dict[str, Any], *, validated: bool) -> None:
        """Log the epoch record, update best / early stopping, checkpoint (with best pointer)."""
        self.logger.log_epoch(record)
        self.history.append(record)
        best = None
        monitor = self.cfg.monitor
        if validated and monitor in record and self.cfg.checkpoint.save_best \
                and self.best_tracker.update(epoch, record):
            best = {"metric": monitor, "value": record[monitor], "epoch": epoch, "mode": self.cfg.monitor_mode}
        if validated and self.cfg.early_stopping.enabled:
            self.early_stopping.update(epoch, record)
        self.position = _Position(epoch=epoch + 1, batch=0, global_step=self.position.global_step)
        self._save_checkpoint(epoch, best)
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)

    # ------------------------------------------------------------------------------------
    def _train_loader(self, epoch: int, start_batch: int) -> DataLoader[Any]:
        start = sum(self.batch_sizes[:start_batch])
        self.sampler.set_epoch(epoch, start)
        set_epoch = getattr(self.train_set, "set_epoch", None)
        if callable(set_epoch):  # per-item seeds (caption choice, augmentation) follow the epoch
            set_epoch(epoch)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch * 10_007 + start) % 2**63)
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            drop_last=self.cfg.drop_last,
            collate_fn=self.train_collate,
            num_workers=self.cfg.num_workers,
            pin_memory=self.cfg.pin_memory,
            generator=generator,
            worker_init_fn=_seed_worker if self.cfg.num_workers > 0 else None,
        )

    def _train_epoch(self, epoch: int) -> None:
        cfg, pos = self.cfg, self.position
        self.task_w.train()
        self.optimizer_w.zero_grad(set_to_none=True)  # never carry gradients into an epoch
        if pos.batch >= self.n_batches:
            return
        loader = track_skips(iter(self._train_loader(epoch, pos.batch)), self.train_set)
        self.progress.start(epoch, self.n_batches, pos.batch)
        window_start, window_samples = time.perf_counter(), 0.0
        while pos.batch < self.n_batches:
            first, end = group_bounds(pos.batch, self.n_batches, cfg.accumulate_grad_batches)
            if first != pos.batch:  # checkpoints are only written at group boundaries
                raise RuntimeError(f"internal error: batch {pos.batch} is not the start of a group")
            planned = self.batch_sizes[first:end]
            self.phase = "a training step"
            if cfg.contrastive_accumulation and len(planned) > 1:
                batches = [self.to_device(next(loader)) for _ in planned]
                terms, group_samples = self._group_feature_cache(epoch, batches)
            else:
                terms, group_samples = self._group_plain(epoch, loader, planned)
            if group_samples == 0:  # on_bad_sample: skip left nothing of this group: no optimizer step
                pos.batch = end
                self.progress.update(end - first)
                continue
            grad_norm = self._optimizer_step(epoch, terms)
            pos.batch = end
            pos.global_step += 1
            if self.ema is not None and pos.global_step % cfg.ema.every_n_steps == 0:
                self.ema.update()
            for name, value in terms.items():
                pos.sums[name] = pos.sums.get(name, 0.0) + value * group_samples
            pos.samples += group_samples
            window_samples += group_samples
            self.progress.update(end - first)
            step_record: dict[str, Any] = {"epoch": epoch, "step": pos.global_step,
                                           "lr": self._lr(offset=-1)}
            step_record.update({f"train/{k}": v for k, v in terms.items()})
            if grad_norm is not None:
                step_record["grad_norm"] = grad_norm
            if pos.global_step % cfg.logging.every_n_steps == 0 or pos.batch == self.n_batches:
                elapsed = time.perf_counter() - window_start
                step_record["samples_per_s"] = window_samples / max(elapsed, 1e-9)  # samples of every process
                self.logger.log_step(step_record)
                self.progress.update(0, {"loss": terms["loss"], "samples/s": step_record["samples_per_s"]})
                window_start, window_samples = time.perf_counter(), 0.0
            for callback in self.callbacks:
                callback.on_train_step_end(self, step_record)
            every = cfg.checkpoint.every_n_steps
            if every is not None and pos.global_step % every == 0 and pos.batch < self.n_batches:
                self._save_checkpoint(epoch, None)
        self.progress.close()
        _check_not_all_skipped(self.train_set, "training split")

    def to_device(self, batch: Any) -> Any:
        """Move a batch (nested dicts/lists of tensors) to this process's device."""
        return _to_device(batch, self.device)

    def forward(self, batch: Any, **kwargs: Any) -> Any:
        """``(outputs, losses)`` of the task under the precision's autocast context.

        Calls the strategy-wrapped module (DDP or plain) directly rather than through Fabric's
        ``_FabricModule`` wrapper, whose per-call input/output traversal and per-output backward
        hooks cost more than the rest of the trainer's per-step bookkeeping together. Precision
        handling is unchanged for the supported 32 / bf16-mixed / 16-mixed settings (autocast).
        """
        assert self.fabric is not None
        with self.fabric.autocast():
            return self._module(batch, **kwargs)

    def _eval_forward(self, batch: Any) -> Any:
        """Validation forward on the unwrapped task: no DDP collectives (buffer broadcasts), so
        processes may run different numbers of validation batches."""
        assert self.fabric is not None
        with self.fabric.autocast():
            return self.task(batch)

    def _no_sync(self, last: bool) -> Any:
        assert self.fabric is not None
        return self.fabric.no_backward_sync(self.task_w, enabled=self.world_size > 1 and not last)

    def _group_plain(self, epoch: int, loader: Any, planned: Sequence[int]) -> tuple[dict[str, float], float]:
        """Sum gradients of sample-weighted micro-batch losses; returns the group's mean terms and samples.

        With several processes both are global: the per-process sums ride on the last micro-batch's
        non-finite check (one all-reduce, no extra collective). That all-reduce is started before
        backward and awaited after it (before any optimizer step), so it overlaps DDP's gradient
        reduction instead of adding a round trip; every process then stops together on the same
        summed flag, and a stopped step applies no update.
        """
        assert self.fabric is not None
        total_planned = sum(planned)
        names: list[str] = []
        sums: torch.Tensor | None = None  # float64 sample-weighted sums of the scalar terms, in `names` order
        seen = 0
        reduced: torch.Tensor | None = None
        for j in range(len(planned)):
            batch = self.to_device(next(loader))
            n = batch_size_of(batch)
            if n == 0:  # every record of the batch was skipped (on_bad_sample: skip)
                if self.world_size > 1:
                    raise UserInputError(f"epoch {epoch}: a batch whose every record was skipped under DDP "
                                         f"(ids {[s['id'] for s in batch['skipped']][:8]}); fix or remove the bad records")
                continue
            weight = n / total_planned
            last = j == len(planned) - 1
            with self._no_sync(last=last):
                _, losses = self.forward(batch)
                assert losses is not None
                if not names:
                    names = [k for k, v in losses.items() if isinstance(v, torch.Tensor) and v.numel() == 1]
                values = torch.stack([losses[k].detach().reshape(()).to(torch.float64) for k in names]) * n
                sums = values if sums is None else sums + values
                seen += n
                # the check's all-reduce (with the last micro-batch's sums) runs during backward: on the
                # gradients' own all-reduce when this backward synchronises them, else on its own
                probe = j == 0 and self._probe_due()
                check = self._start_finite_check(losses, payload=sums if last else None, samples=seen,
                                                 with_gradients=last and not probe)
                if probe:  # never probe (and log) a step that is about to stop: await the check first
                    reduced = self._finish_finite_check(check, epoch, losses, micro=(j, len(planned)))
                    self._probe(epoch, losses)
                self.fabric.backward(losses["total"] * weight)
                if not probe:
                    reduced = self._finish_finite_check(check, epoch, losses, micro=(j, len(planned)))
        if sums is None:  # every record of the group was skipped: no update (the caller skips the step)
            return {}, 0
        total: float = seen
        if self.world_size > 1:
            assert reduced is not None
            total, sums = float(reduced[0]), reduced[1:]
        means = (sums / total).tolist()
        return {("loss" if k == "total" else k): v for k, v in zip(names, means, strict=True)}, total

    def _group_feature_cache(self, epoch: int, batches: list[Any]) -> tuple[dict[str, float], float]:
        """Contrastive accumulation over ``batches`` (see :mod:`medvl.training.accumulation`).

        Returns the group's terms (the objective on the whole group; global means over processes)
        and its number of samples (over every process).
        """
        assert self.fabric is not None
        device = self.fabric.device
        snapshots, cached = [], []
        with torch.no_grad():
            for batch in batches:
                snapshots.append(TorchRNGSnapshot(device))
                outputs, _ = self.forward(batch, features_only=True)
                cached.append(_detach_tree(outputs))
        shared = frozenset(getattr(self.model, "shared_output_keys", ()))
        cache = FeatureCacheContext(cached, [batch_size_of(b) for b in batches], concat_batches(batches), shared)
        terms: dict[str, float] = {}
        samples: float = sum(cache.sizes)
        for j in range(len(batches)):
            snapshots[j].restore()
            cache.index = j
            with self._no_sync(last=j == len(batches) - 1):
                _, losses = self.forward(batches[j], cache=cache)
                assert losses is not None
                names = [k for k, v in losses.items() if isinstance(v, torch.Tensor) and v.numel() == 1]
                values = torch.stack([losses[k].detach().reshape(()).to(torch.float64) for k in names])
                reduced = self._check_finite(epoch, losses, micro=(j, len(batches)),
                                             payload=values * samples if j == 0 else None, samples=samples)
                if j == 0:
                    self._probe(epoch, losses)
                self.fabric.backward(losses["total"])
            if j == 0:
                if reduced is not None:
                    samples, values = float(reduced[0]), reduced[1:] / float(reduced[0])
                terms = {("loss" if k == "total" else k): float(v) for k, v in zip(names, values.tolist(), strict=True)}
        for param in self.objective_params:  # they saw the whole group in every micro-step
            if param.grad is not None:
                param.grad.div_(len(batches))
        return terms, samples

    def _probe_due(self) -> bool:
        probe = self.gradient_probe
        return probe is not None and bool(probe.due(self.position.global_step))

    def _probe(self, epoch: int, losses: Mapping[str, torch.Tensor]) -> None:
        probe = self.gradient_probe
        if probe is None or not probe.due(self.position.global_step):
            return
        weights = getattr(self.objective, "weights", None)
        record = {"epoch": epoch, "step": self.position.global_step,
                  **probe.measure(losses, self.task, weights=weights)}
        self.logger.log_probe(record)

    def _check_finite(self, epoch: int, losses: Mapping[str, torch.Tensor], micro: tuple[int, int],
                      payload: torch.Tensor | None = None, samples: float = 0.0) -> torch.Tensor | None:
        """Stop on a non-finite total (every process together); see :meth:`_start_finite_check`."""
        check = self._start_finite_check(losses, payload=payload, samples=samples)
        return self._finish_finite_check(check, epoch, losses, micro)

    def _start_finite_check(self, losses: Mapping[str, torch.Tensor], payload: torch.Tensor | None = None,
                            samples: float = 0.0, with_gradients: bool = False) -> _FiniteCheck:
        """Begin the non-finite check of ``losses["total"]``.

        With several processes, the flag, ``samples`` and ``payload`` (float64 sums) are summed over
        processes in one all-reduce: with ``with_gradients`` under DDP, appended to the gradients'
        own all-reduce of the coming backward (no extra collective); otherwise an asynchronous sum
        all-reduce on the default process group (what ``fabric.all_reduce`` reduces over, without its
        extra barrier round trip). :meth:`_finish_finite_check` awaits it.
        """
        finite = torch.isfinite(losses["total"].detach()).all()
        if self.world_size == 1:
            return _FiniteCheck(finite=finite)
        flag = (~finite).to(torch.float64).reshape(1)
        parts = [flag] if payload is None else [flag, torch.tensor([samples], dtype=torch.float64,
                                                                   device=flag.device), payload.to(flag.device)]
        buffer = torch.cat(parts)
        if with_gradients and self._grad_payload is not None:
            self._grad_payload.attach(buffer)
            return _FiniteCheck(finite=finite, buffer=buffer, has_payload=payload is not None, with_gradients=True)
        work = torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM, async_op=True)
        return _FiniteCheck(finite=finite, buffer=buffer, work=work, has_payload=payload is not None)

    def _finish_finite_check(self, check: _FiniteCheck, epoch: int, losses: Mapping[str, torch.Tensor],
                             micro: tuple[int, int]) -> torch.Tensor | None:
        """Await the check; raise :class:`NonFiniteLossError` on every process when any process's
        total was non-finite. Returns ``[Σ samples, *Σ payload]`` with a payload and several
        processes, ``None`` otherwise."""
        finite, summed = check.finite, None
        if check.buffer is not None:
            buffer = check.buffer
            if check.with_gradients:
                assert self._grad_payload is not None
                carried = self._grad_payload.take()
                if carried is None:  # no bucket carried it (same on every process): reduce it now
                    torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
                else:
                    buffer = carried
            else:
                assert check.work is not None
                check.work.wait()
            finite = buffer[0] == 0
            summed = buffer[1:] if check.has_payload else None
        if bool(finite):
            return summed
        terms = {k: float(v.detach()) for k, v in losses.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
        shown = ", ".join(f"{k}={v:.6g}" for k, v in terms.items())
        self._stop_non_finite(
            f"non-finite loss at epoch {epoch}, optimizer step {self.position.global_step + 1} "
            f"(micro-batch {micro[0] + 1} of {micro[1]}); terms: {shown}",
            epoch, terms,
        )

    def _stop_non_finite(self, what: str, epoch: int, terms: Mapping[str, float]) -> NoReturn:
        last = self.last_checkpoint
        message = (f"{what}. Training stopped; no update was applied for this step and the last good "
                   f"checkpoint is intact: {last or 'none was written yet'}")
        result = self._result("non_finite_loss", message)
        self._write_result(result)
        self.progress.close()
        self.logger.close()
        raise NonFiniteLossError(message, epoch=epoch, step=self.position.global_step + 1, terms=terms,
                                 last_checkpoint=last)

    def _optimizer_step(self, epoch: int, terms: Mapping[str, float]) -> float | None:
        assert self.fabric is not None
        grad_norm: float | None = None
        if self.sharded:  # the parameters FSDP keeps whole (0-d) get DDP's averaged gradient
            from medvl.training.sharding import average_replicated_gradients, replicated_parameters

            average_replicated_gradients(replicated_parameters(self.task), self.fabric.all_reduce)
        if self.cfg.grad_clip_norm is not None:
            norm = self.fabric.clip_gradients(self.task_w, self.optimizer_w, max_norm=self.cfg.grad_clip_norm,
                                              error_if_nonfinite=False)
            grad_norm = float(norm) if norm is not None else None
            if grad_norm is not None and not math.isfinite(grad_norm) and self.cfg.precision != "16-mixed":
                self._stop_non_finite(
                    f"non-finite gradient norm ({grad_norm}) at epoch {epoch}, optimizer step "
                    f"{self.position.global_step + 1}; terms: "
                    + ", ".join(f"{k}={v:.6g}" for k, v in terms.items()), epoch, terms)
        self.optimizer_w.step()
        self.scheduler.step()
        self.optimizer_w.zero_grad(set_to_none=True)
        for module in (self.model, self.objective):
            for name in POST_STEP_METHODS:
                method = getattr(module, name, None)
                if callable(method):
                    method()
                    break
        return grad_norm

    def _lr(self, offset: int = 0) -> float:
        """Learning rate of the first group (``offset=-1``: the one used by the step just taken)."""
        base = self.scheduler.base_lrs[0]
        return float(base * self.schedule(self.scheduler.last_epoch + offset))

    # ------------------------------------------------------------------------------------
    def _validate(self, epoch: int) -> dict[str, float]:
        assert self.fabric is not None
        self.phase = "validation"
        loader = None
        padding: list[bool] = []
        if self.val_set is not None:
            # FSDP gathers parameters in every forward: processes then run equally many batches
            batches = BatchShardSampler(len(self.val_set), self.cfg.batch_size,  # type: ignore[arg-type,unused-ignore]
                                        num_replicas=self.world_size, rank=self.rank, pad=self.sharded)
            padding = batches.padding
            loader = DataLoader(
                self.val_set,
                batch_sampler=batches,
                collate_fn=self.val_collate,
                num_workers=self.cfg.num_workers,
                pin_memory=self.cfg.pin_memory,
            )
        ctx = ValidationContext(model=self.model, forward=self._eval_forward, fabric=self.fabric, epoch=epoch,
                                global_step=self.position.global_step,
                                loader=None if loader is None else _SkipNotingLoader(loader, self.val_set),
                                run_dir=self.run_dir, to_device=self.to_device, padding=padding)
        metrics: dict[str, float] = {}
        cpu_rng = torch.get_rng_state()  # validation must not shift the training RNG stream
        self.task_w.eval()
        swapped = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        try:
            with local_only(), swapped:  # EMA: validation sees the averaged weights  # each process scores whole batches by itself; hooks reduce exact sums
                for hook in self.validation_hooks:
                    for name, value in hook(ctx).items():
                        metrics[name if name.startswith("val/") else f"val/{name}"] = float(value)
        finally:
            self.task_w.train()
            torch.set_rng_state(cpu_rng)
        if self.val_set is not None:
            _check_not_all_skipped(self.val_set, "validation split")
        return metrics

    # ------------------------------------------------------------------------------------
    def _trainer_state(self) -> dict[str, Any]:
        pos = self.position
        return {
            "epoch": pos.epoch,
            "batch_in_epoch": pos.batch,
            "global_step": pos.global_step,
            "epoch_sums": pos.sums,
            "epoch_samples": pos.samples,
            "n_batches": self.n_batches,
            "steps_per_epoch": self.steps_per_epoch,
            "sampler": self.sampler.state_dict(),
            "scheduler": to_jsonable(self.scheduler.state_dict()),
            "early_stopping": self.early_stopping.state_dict(),
            "best_tracker": self.best_tracker.state_dict(),
            "seed": self.seed,
            "grad_scaler": to_jsonable(self._scaler.state_dict()) if self._scaler is not None else None,
            "ema_updates": self.ema.updates if self.ema is not None else None,
        }

    def _restore_ema(self) -> None:
        """The weight average of the checkpoint being resumed (exact), or a fresh one when it has none."""
        import safetensors.torch as st

        assert self.ema is not None and self.last_checkpoint is not None
        file = Path(self.last_checkpoint) / EMA_WEIGHTS_FILE
        state = read_json(Path(self.last_checkpoint) / "state.json")["trainer"]
        if file.is_file():
            self.ema.load_state_tensors(st.load_file(str(file)), int(state.get("ema_updates") or 0))

    @property
    def _scaler(self) -> Any:
        """The fp16 GradScaler of ``16-mixed`` (``None`` otherwise)."""
        precision = getattr(self.fabric, "_precision", None)
        return getattr(precision, "scaler", None)

    def _save_checkpoint(self, epoch: int, best: dict[str, Any] | None) -> None:
        self.phase = "a checkpoint"
        states: dict[str, Any] = {}
        if self.sharded:  # gathered on every process, written by process 0
            from medvl.training.sharding import full_state_dict

            states = {"model_state": full_state_dict(self.model), "objective_state": full_state_dict(self.objective)}
        saved = self.checkpoints.save(
            epoch=epoch,
            global_step=self.position.global_step,
            model=self.model,
            objective=self.objective,
            optimizer=self.optimizer,
            state=self._trainer_state(),
            rng=capture_rng_state(),
            best=best,
            extra_tensors={EMA_WEIGHTS_FILE: self.ema.state_tensors()} if self.ema is not None else None,
            **states,
        )
        self.last_checkpoint = str(saved.path)

    def _load_weights(self, module: nn.Module, file: Path, allow_missing: bool = False) -> list[str]:
        """Load a weights file into ``module`` (into its shards under FSDP); returns the parameters it lacked."""
        if not self.sharded:
            return load_model_weights(module, file, allow_missing=allow_missing)
        import safetensors.torch as st

        from medvl.training.sharding import load_full_state_dict

        if allow_missing:
            raise CheckpointError("training.init_allow_missing is not supported with training.strategy=fsdp yet")
        try:
            load_full_state_dict(module, st.load_file(str(file)))
        except ValueError as exc:
            raise CheckpointError(f"{file}: {exc}") from exc
        return []

    def _restore(self) -> None:
        payload, rng = self.checkpoints.load("last", model=self.model, objective=self.objective,
                                             optimizer=self.optimizer, load_weights=self._load_weights)
        state = payload["trainer"]
        if state["n_batches"] != self.n_batches:
            raise CheckpointError(
                f"cannot resume from {payload['_path']}: it has {state['n_batches']} batches per epoch, "
                f"this run {self.n_batches} (dataset, batch size or number of processes changed)"
            )
        self.sampler.load_state_dict(state["sampler"])
        sizing = dict(vars(self.schedule))
        self.scheduler.load_state_dict(state["scheduler"])
        if vars(self.schedule) != sizing:
            # training.epochs (or the schedule) changed: continue on the new curve from this step
            vars(self.schedule).update(sizing)
            lrs = [base * self.schedule(self.scheduler.last_epoch) for base in self.scheduler.base_lrs]
            for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
            self.scheduler._last_lr = lrs
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.best_tracker.load_state_dict(state["best_tracker"])
        if self._scaler is not None and state.get("grad_scaler"):
            self._scaler.load_state_dict(state["grad_scaler"])
        self.position = _Position(epoch=state["epoch"], batch=state["batch_in_epoch"],
                                  global_step=state["global_step"], sums=dict(state["epoch_sums"]),
                                  samples=float(state["epoch_samples"]))
        es, stop = self.cfg.early_stopping, self.early_stopping  # patience etc. may change on resume
        stop.should_stop = es.enabled and stop.bad_validations >= es.patience \
            and self.position.epoch - 1 >= es.min_epochs
        self.last_checkpoint = payload["_path"]
        self.logger.truncate(max_step=self.position.global_step, max_epoch=self.position.epoch - 1)
        for repair in self.logger.repairs:
            warnings.warn(f"log repaired on resume: {repair}", stacklevel=2)
        self.history = [r for r in read_jsonl(self.logger.epochs_path) if r["epoch"] < self.position.epoch] \
            if self.logger.enabled else []
        if rng is not None and payload.get("world_size") == self.world_size:
            restore_rng_state(*rng)

    # ------------------------------------------------------------------------------------
    def _result(self, status: str, message: str = "") -> FitResult:
        best = self.checkpoints.best_info() if self.rank == 0 else None
        return FitResult(status=status, epochs_completed=max(self.position.epoch - 1, 0),
                         global_step=self.position.global_step, best=best,
                         last_checkpoint=self.last_checkpoint, history=list(self.history), message=message)

    def _write_result(self, result: FitResult) -> None:
        if self.rank != 0:
            return
        payload = {
            **result.to_dict(),
            "medvl_version": __version__,
            "seed": self.seed,
            "world_size": self.world_size,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.schedule.total_steps,
            "param_groups": {k: len(v) for k, v in (self.param_groups.names if self.param_groups else {}).items()},
            "frozen_params": len(self.param_groups.frozen) if self.param_groups else 0,
            "provenance": self.provenance,
        }
        if self.logger.repairs:
            payload["log_repairs"] = list(self.logger.repairs)
        for key, dataset in (("train_skipped", self.train_set), ("val_skipped", self.val_set)):
            skip_report = getattr(dataset, "skip_report", None)
            if callable(skip_report):
                payload[key] = skip_report()
        if self.init_missing:
            payload["init_missing_parameters"] = self.init_missing
        atomic_write_json(self.run_dir / RESULT_FILE, payload)
