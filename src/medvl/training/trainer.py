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
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from medvl.config.training import TrainConfig
from medvl.models.weights import evaluation_weights
from medvl.objectives.distributed import local_only
from medvl.training.accumulation import (
    FeatureCacheContext,
    batch_size_of,
    concat_batches,
    group_bounds,
    micro_batch_sizes,
)
from medvl.training.batches import (
    SkipNotingLoader,
    check_not_all_skipped,
    detach_tree,
    split_data,
    to_device,
    train_loader,
    validation_loader,
)
from medvl.training.callbacks import (
    Callback,
    EarlyStopping,
    ObjectiveValidation,
    ValidationContext,
    ValidationHook,
)
from medvl.training.checkpoint import CheckpointManager, resolve_checkpoint
from medvl.training.distributed import collective_error
from medvl.training.ema import WeightEMA
from medvl.training.fabric_setup import build_fabric
from medvl.training.finite_check import FiniteLossCheck, NonFiniteLossError, non_finite_message
from medvl.training.grad_sync import PayloadAllReduce
from medvl.training.logging import MetricsLogger, ProgressBar
from medvl.training.optim import ParamGroupSummary, build_optimizer, build_scheduler
from medvl.training.result import FitResult, fit_result, write_result
from medvl.training.rng import TorchRNGSnapshot
from medvl.training.sampler import ResumableSampler
from medvl.training.sharding import is_sharded
from medvl.training.task import TrainTask
from medvl.training.trainer_state import TrainPosition, load_weights, restore, restore_ema, save_checkpoint
from medvl.utils.errors import UserInputError
from medvl.utils.seeding import seed_everything, set_deterministic

if TYPE_CHECKING:
    from lightning_fabric import Fabric

__all__ = ["FitResult", "NonFiniteLossError", "Trainer"]

#: Model/objective methods called after every optimizer step when present (e.g. clamping the logit scale).
POST_STEP_METHODS: tuple[str, ...] = ("clamp_", "after_optimizer_step", "clamp_logit_scale")


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
        self.position = TrainPosition()
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

        train_set, train_collate = split_data(train_data, collate_fn)
        self.train_set, self.train_collate = train_set, train_collate
        self.val_set: Dataset[Any] | None = None
        self.val_collate: Callable[..., Any] | None = None
        self.init_missing: list[str] = []
        if val_data is not None:
            self.val_set, self.val_collate = split_data(val_data, collate_fn)
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
        grad_payload: PayloadAllReduce | None = None
        if isinstance(self._module, DistributedDataParallel):  # the per-step check rides on the gradients
            grad_payload = PayloadAllReduce(self._module.process_group)
            self._module.register_comm_hook(grad_payload, PayloadAllReduce.hook)
        self.finite_check = FiniteLossCheck(self.world_size, grad_payload, stop=self._stop_non_finite)
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
        self.position = TrainPosition()

        resumed = False
        if resume and self.checkpoints.has_checkpoint():
            restore(self)
            resumed = True
        else:
            # a fresh start (also --resume of a run killed before its first checkpoint): no old records
            self.logger.truncate(max_step=0, max_epoch=-1)
            if cfg.init_weights is not None:
                init = Path(cfg.init_weights)  # a run or checkpoint: the weights it was evaluated with (its EMA)
                weights = init if init.is_file() else evaluation_weights(resolve_checkpoint(init, "best"))
                self.init_missing = load_weights(model, weights, sharded=self.sharded,
                                                 allow_missing=cfg.init_allow_missing)
        self.ema: WeightEMA | None = None
        if cfg.ema.enabled:
            self.ema = WeightEMA(model, cfg.ema.decay, warmup=cfg.ema.warmup)
            if resumed:
                restore_ema(self)

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
        result = fit_result(self, status)
        write_result(self, result)
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
        self.position = TrainPosition(epoch=epoch + 1, batch=0, global_step=self.position.global_step)
        save_checkpoint(self, epoch, best)
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)

    # ------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> None:
        cfg, pos = self.cfg, self.position
        self.task_w.train()
        self.optimizer_w.zero_grad(set_to_none=True)  # never carry gradients into an epoch
        if pos.batch >= self.n_batches:
            return
        loader = train_loader(self.train_set, self.sampler, cfg, self.train_collate, seed=self.seed, epoch=epoch,
                              start=sum(self.batch_sizes[:pos.batch]))
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
                save_checkpoint(self, epoch, None)
        self.progress.close()
        check_not_all_skipped(self.train_set, "training split")

    def to_device(self, batch: Any) -> Any:
        """Move a batch (nested dicts/lists of tensors) to this process's device."""
        return to_device(batch, self.device)

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
                check = self.finite_check.start(losses, payload=sums if last else None, samples=seen,
                                                with_gradients=last and not probe)
                step, micro = self.position.global_step + 1, (j, len(planned))
                if probe:  # never probe (and log) a step that is about to stop: await the check first
                    reduced = self.finite_check.finish(check, losses, epoch=epoch, step=step, micro=micro)
                    self._probe(epoch, losses)
                self.fabric.backward(losses["total"] * weight)
                if not probe:
                    reduced = self.finite_check.finish(check, losses, epoch=epoch, step=step, micro=micro)
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
                cached.append(detach_tree(outputs))
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
                reduced = self.finite_check.check(losses, epoch=epoch, step=self.position.global_step + 1,
                                                  micro=(j, len(batches)),
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

    def _stop_non_finite(self, what: str, epoch: int, terms: Mapping[str, float]) -> NoReturn:
        """Write the result and raise :class:`NonFiniteLossError` (``what``: the non-finite loss or norm)."""
        last = self.last_checkpoint
        message = non_finite_message(what, last)
        result = fit_result(self, "non_finite_loss", message)
        write_result(self, result)
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
        loader: SkipNotingLoader | None = None
        padding: list[bool] = []
        if self.val_set is not None:  # FSDP gathers parameters in every forward: equally many batches
            loader, padding = validation_loader(self.val_set, self.cfg, self.val_collate, world_size=self.world_size,
                                                rank=self.rank, pad=self.sharded)
        ctx = ValidationContext(model=self.model, forward=self._eval_forward, fabric=self.fabric, epoch=epoch,
                                global_step=self.position.global_step, loader=loader, run_dir=self.run_dir, to_device=self.to_device, padding=padding)
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
            check_not_all_skipped(self.val_set, "validation split")
        return metrics
