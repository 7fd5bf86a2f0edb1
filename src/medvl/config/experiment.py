"""Schemas for experiments: stages × a grid of λ, folds and seeds (``medvl sweep``).

An experiment runs *stages* in order. Each stage trains from a run config (the same file
``medvl train`` takes) with per-cell overrides, optionally starting from the weights of an
earlier stage's cell with the same fold and seed. Overrides may use the placeholders
``{lambda}``, ``{fold}``, ``{seed}`` and ``{stage}``.

Example (the Balancing Act protocol)::

    name: balancing-act
    grid: {lambdas: [0.9, 0.98, 1.0], folds: [0, 1, 2, 3, 4], seeds: [0]}
    stages:
      - name: classifier
        config: configs/train_synthetic.yaml
        over_lambda: false
        set: ["objective.balance=0.0", "data.fold={fold}", "seed={seed}"]
      - name: tune
        config: configs/train_synthetic.yaml
        init_from: classifier
        set: ["objective.balance={lambda}", "data.fold={fold}", "seed={seed}"]
    selection: {metric: val/retrieval/i2t/recall@5, mode: max}
    classification_metric: classification/findings/map_macro
    baseline: {stage: classifier}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medvl.config.base import StrictModel
from medvl.config.evaluation import EvaluationConfig
from medvl.config.executor import ExecutorConfig, ResourceSpec

__all__ = ["BaselineSpec", "ExperimentConfig", "GridSpec", "SelectionSpec", "StageSpec"]

PLACEHOLDERS = ("lambda", "fold", "seed", "stage")


class GridSpec(StrictModel):
    """The values every stage is crossed with (a stage with ``over_lambda: false`` ignores λ)."""

    lambdas: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    folds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("lambdas")
    @classmethod
    def _lambdas_in_unit_interval(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"λ must lie in [0, 1], got {value}")
        if len(set(values)) != len(values):
            raise ValueError(f"λ values must be distinct, got {values}")
        return values

    @field_validator("folds", "seeds")
    @classmethod
    def _distinct(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError(f"values must be distinct, got {values}")
        return values


class SelectionSpec(StrictModel):
    """Which validation metric picks the 'best' epoch whose test results are reported."""

    metric: str = "val/retrieval/i2t/recall@5"
    mode: Literal["min", "max"] = "max"


class StageSpec(StrictModel):
    """One stage: a training run per cell of the grid."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    config: Path | None = None
    """Run config file (as for ``medvl train``), relative to the experiment file; or use ``inline``."""
    inline: dict[str, object] | None = None
    """A run config given inline instead of a file (merged over ``config`` when both are set)."""
    set: list[str] = Field(default_factory=list)
    """``key.path=value`` overrides with ``{lambda}``, ``{fold}``, ``{seed}``, ``{stage}`` placeholders."""
    over_lambda: bool = True
    """Whether the stage is repeated for every λ (a stage-1 classifier is not)."""
    init_from: str | None = None
    """Name of an earlier stage whose cell (same fold and seed) provides the initial weights."""
    init_checkpoint: Literal["best", "last"] = "best"
    selection: SelectionSpec | None = None
    """Overrides the experiment's ``selection`` for this stage (a stage-1 classifier picks its best
    epoch by a classification metric, the tuning stage by retrieval)."""
    resources: ResourceSpec | None = None
    """What each of this stage's cells asks the executor for, merged over the experiment's ``resources``."""

    @model_validator(mode="after")
    def _has_config(self) -> StageSpec:
        if self.config is None and self.inline is None:
            raise ValueError(f"stage {self.name!r}: give `config` (a file) or `inline` (a mapping)")
        return self


class BaselineSpec(StrictModel):
    """Reference for Δ%: the named stage's test results of the same fold and seed."""

    stage: str | None = None
    checkpoint: Literal["best", "last"] = "best"


class ExperimentConfig(StrictModel):
    """A whole study: stages, grid, epoch selection, Δ% baseline and report metrics."""

    name: str = "experiment"
    grid: GridSpec = Field(default_factory=GridSpec)
    stages: list[StageSpec] = Field(min_length=1)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    classification_metric: str
    """Metric on the classification axis of tables and trade-off plots, as the evaluation suite
    names it, e.g. ``classification/findings/map_macro`` (no default: it names a task)."""
    retrieval_metric: str = "retrieval/i2t/recall@5"
    """Metric on the retrieval axis of tables and trade-off plots."""
    report_metrics: list[str] = Field(default_factory=list)
    """Extra metrics to tabulate (besides the two axes)."""
    jobs: int = Field(default=1, ge=1)
    """Cells run at once (dependencies between stages are respected); ``executor.max_parallel`` overrides it."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """Where cells run: this process, local worker processes, submitit's local executor or SLURM."""
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    """What each cell asks for (GPUs, CPUs, memory, wall time); stages may override fields."""
    evaluation: EvaluationConfig | None = None
    """After training, evaluate each cell's best checkpoint on its test split as ``medvl evaluate`` does
    (any task: zero-shot, probe, captioning, VQA, …); the metrics join the cell's test metrics as
    ``<task>/<metric>`` (so tables, Δ% and ``report_metrics`` can name them) and the full results go
    to ``<cell>/evaluation/``. Null = only the per-epoch validation metrics on the test split."""

    @model_validator(mode="after")
    def _stage_references(self) -> ExperimentConfig:
        seen: list[str] = []
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name {stage.name!r} is used twice")
            if stage.init_from is not None and stage.init_from not in seen:
                raise ValueError(
                    f"stage {stage.name!r}: init_from={stage.init_from!r} must name an earlier stage ({seen})"
                )
            seen.append(stage.name)
        if self.baseline.stage is not None and self.baseline.stage not in seen:
            raise ValueError(f"baseline.stage={self.baseline.stage!r} is not a stage ({seen})")
        return self
