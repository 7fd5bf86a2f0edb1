"""Schemas for ``medvl train``: the training engine (:class:`TrainConfig`) and a whole run (:class:`RunConfig`).

A run config is one YAML file with the sections ``data``, ``model``, ``objective``,
``training`` and ``evaluation`` plus a top-level ``seed`` (it seeds data sampling, model
initialisation, augmentation and the trainer). Each section's schema lives with its package
(``medvl.config.data``, ``.model``, ``.objective``, ``.evaluation``); this module owns only
``training`` and the assembly.

Step counts: one *optimizer step* is taken per ``accumulate_grad_batches`` micro-batches,
and also on the last (partial) group of an epoch, so an epoch has
``ceil(batches_per_epoch / accumulate_grad_batches)`` optimizer steps. Schedules are sized in
optimizer steps.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medvl.config.base import StrictModel

__all__ = [
    "CheckpointConfig",
    "CompileConfig",
    "EMAConfig",
    "EarlyStoppingConfig",
    "FSDPConfig",
    "LoggingConfig",
    "OptimizerConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
]

Precision = Literal["32", "bf16-mixed", "16-mixed"]


class OptimizerConfig(StrictModel):
    """AdamW with two parameter groups per learning-rate multiplier: decayed and not decayed.

    Biases, every parameter of a normalisation layer, all 0/1-dimensional tensors and any
    parameter whose name contains one of ``no_decay_names`` (the temperature / logit scale and
    logit bias by default) get no weight decay.
    """

    name: Literal["adamw"] = "adamw"
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    no_decay_names: list[str] = Field(default_factory=lambda: ["logit_scale", "logit_bias", "temperature"])
    lr_multipliers: dict[str, float] = Field(default_factory=dict)
    """Parameter-name prefix → multiplier of ``lr`` (e.g. ``{"vision.backbone": 0.1}``); longest prefix wins."""

    @model_validator(mode="after")
    def _check(self) -> OptimizerConfig:
        for beta in self.betas:
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        for prefix, mult in self.lr_multipliers.items():
            if mult < 0:
                raise ValueError(f"lr_multipliers[{prefix!r}] must be >= 0, got {mult}")
        return self


class ScheduleConfig(StrictModel):
    """Learning-rate schedule, stepped once per optimizer step.

    * ``constant``: ``lr`` after the warm-up;
    * ``step``: ``lr · gamma^floor(epochs_done / step_epochs)`` (epochs counted in optimizer steps);
    * ``cosine``: cosine from ``lr`` after the warm-up down to ``min_lr_ratio · lr`` at the last
      optimizer step of the run (sized to the real number of steps).

    Warm-up is linear from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` optimizer steps;
    ``warmup_epochs`` (may be fractional) is converted to steps and overrides ``warmup_steps``.
    """

    kind: Literal["constant", "step", "cosine"] = "cosine"
    warmup_steps: int = Field(default=0, ge=0)
    warmup_epochs: float | None = Field(default=None, ge=0)
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    step_epochs: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.1, gt=0, le=1)


class EarlyStoppingConfig(StrictModel):
    """Stop when ``metric`` (any logged epoch metric, e.g. ``val/loss``) has not improved for ``patience`` validations."""

    enabled: bool = False
    metric: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(default=5, ge=1)
    min_epochs: int = Field(default=0, ge=0)
    """No stop before this many training epochs have run."""
    min_delta: float = Field(default=0.0, ge=0)
    """An improvement must exceed this (absolute) amount."""


class CheckpointConfig(StrictModel):
    """Checkpoints under ``RUN_DIR/checkpoints``: ``last`` always; ``best`` by ``monitor``.

    ``every_n_steps`` adds mid-epoch checkpoints (always at an optimizer-step boundary) so a
    killed run loses at most that many steps; the end of every epoch is always checkpointed.
    """

    monitor: str | None = None
    """Metric that selects ``best``; ``None`` = the early-stopping metric."""
    mode: Literal["min", "max"] | None = None
    """``None`` = the early-stopping mode."""
    every_n_steps: int | None = Field(default=None, ge=1)
    save_best: bool = True


class LoggingConfig(StrictModel):
    """Per-step and per-epoch logs (JSONL + CSV) in the run directory; optional TensorBoard."""

    every_n_steps: int = Field(default=10, ge=1)
    tensorboard: bool = False
    progress_bar: bool = True


class FSDPConfig(StrictModel):
    """``strategy: fsdp`` (FSDP2): every submodule owning ``min_params`` parameters is sharded separately."""

    min_params: int = Field(default=1_000_000, ge=1)


class EMAConfig(StrictModel):
    """An exponential moving average of the model's weights, used for validation, ``best`` and evaluation.

    ``ema ← decay·ema + (1 − decay)·w`` after every ``every_n_steps``-th optimizer step; with
    ``warmup``, the decay is ``min(decay, (1 + t)/(10 + t))`` after ``t`` updates. Checkpoints hold the
    average as ``ema.safetensors`` (the training weights stay in ``model.safetensors`` for resume).
    """

    enabled: bool = False
    decay: float = Field(default=0.999, gt=0.0, lt=1.0)
    every_n_steps: int = Field(default=1, ge=1)
    warmup: bool = False


class CompileConfig(StrictModel):
    """``torch.compile`` of the training forward (model + objective); validation runs uncompiled.

    ``backend``: ``inductor`` (generated kernels; needs a C++ compiler on CPU, Triton on GPU),
    ``aot_eager`` or ``eager`` (graph capture only, for debugging). ``mode``: inductor's
    ``default``, ``reduce-overhead`` (CUDA graphs) or ``max-autotune``.
    """

    enabled: bool = False
    backend: str = "inductor"
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    fullgraph: bool = False
    dynamic: bool | None = None


class TrainConfig(StrictModel):
    """The training engine (``training:`` section of a run config)."""

    epochs: int = Field(default=10, ge=0)
    batch_size: int = Field(default=32, ge=1)
    """Micro-batch size per device."""
    accumulate_grad_batches: int = Field(default=1, ge=1)
    contrastive_accumulation: bool = False
    """Accumulate by caching features (open_clip ``accum_freq``): the objective sees the whole
    group as one batch (more negatives); otherwise gradients of per-micro-batch losses are summed."""
    drop_last: bool = False
    num_workers: int = Field(default=0, ge=0)
    pin_memory: bool = False
    deterministic: bool = False
    """Deterministic kernels (``torch.use_deterministic_algorithms``); use for exact CPU resume tests."""
    precision: Precision = "32"
    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = "auto"
    devices: int | str = 1
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_find_unused_parameters_true", "fsdp"] = "auto"
    fsdp: FSDPConfig = Field(default_factory=lambda: FSDPConfig())
    num_nodes: int = Field(default=1, ge=1)
    collective_timeout_s: float = Field(default=1800.0, gt=0)
    """Longest wait of one collective (gradient all-reduce, loss all-gather, barriers) before the
    run stops with an error naming the process, phase, epoch and step instead of hanging."""
    grad_clip_norm: float | None = Field(default=None, gt=0)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    val_every_n_epochs: int = Field(default=1, ge=1)
    validate_at_start: bool = True
    """Validate at epoch 0 before any update (the baseline)."""
    ema: EMAConfig = Field(default_factory=EMAConfig)
    compile: CompileConfig = Field(default_factory=CompileConfig)
    init_weights: Path | None = None
    """Start from these weights: a ``model.safetensors`` file, a checkpoint directory or a run directory (its ``best``)."""
    init_allow_missing: bool = False
    """Parameters of this model that ``init_weights`` lacks (e.g. a CoCa decoder or SimCLR projector added
    to a pretrained CLIP) keep their fresh initialisation instead of being an error; they are listed in
    ``training_result.json``. Tensors of the file that the model lacks are still an error."""

    @property
    def monitor(self) -> str:
        """The metric that selects the best checkpoint."""
        return self.checkpoint.monitor or self.early_stopping.metric

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        """``min`` or ``max`` for :attr:`monitor`."""
        return self.checkpoint.mode or self.early_stopping.mode


def _section_schema(module: str, name: str) -> Any:
    """The schema class of another package's section, or ``dict`` while that package has none."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return dict[str, Any]


DataSection: Any = _section_schema("medvl.config.data", "DataConfig")
ModelSection: Any = _section_schema("medvl.config.model", "ModelConfig")
ObjectiveSection: Any = _section_schema("medvl.config.objective", "ObjectiveConfig")
EvaluationSection: Any = _section_schema("medvl.config.evaluation", "EvaluationConfig")


class RunConfig(StrictModel):
    """One training run: ``medvl train CONFIG`` reads this."""

    name: str = "run"
    #: seeds sampling, initialisation, augmentation and the trainer (torch generators take 0 <= seed < 2**63)
    seed: int = Field(default=0, ge=0, lt=2**63)
    data: DataSection
    model: ModelSection
    objective: ObjectiveSection
    training: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationSection | None = None

    @model_validator(mode="after")
    def _dataset_negatives_configured(self) -> RunConfig:
        """A term that reads dataset negatives needs ``data.negatives`` (on the same task)."""
        finder = getattr(self.objective, "dataset_negative_terms", None)
        if finder is None:
            return self
        sampling = getattr(self.data, "negatives", None)
        for i, term in finder():
            where = f"objective.terms.{i} ({term.name!r})"
            if sampling is None:
                raise ValueError(
                    f"{where} uses negatives drawn from the dataset but data.negatives is not set; add e.g. "
                    "data.negatives: {task: grade, k: 1}"
                )
            task = term.options.get("task")
            if task is not None and term.kind == "triplet" and task != sampling.task:
                raise ValueError(
                    f"{where}: options.task is {task!r} but data.negatives.task is {sampling.task!r}; "
                    "negatives are drawn by data.negatives.task"
                )
        return self
