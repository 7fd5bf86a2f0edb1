"""Configuration of ``medvl benchmark``: models × datasets × tasks (see ``docs/benchmark.md``).

::

    models:
      - {name: clip-synth, spec: runs/clip-synth}                # medvl run / model dir, HF dir, …
      - {name: exported, embeddings: "emb/{dataset}/{split}"}   # EmbeddingSet directories per dataset/split
    datasets:
      - {name: synth-a, manifest: data/a/manifest.parquet}
      - {collection: cxr-transfer, data_dir: data/cxr}          # a shipped collection of manifests
    tasks: auto                                                 # or [retrieval, zeroshot, probe, classification]
    eval: {probe: {shots: [1, 4, all]}}                         # EvaluationConfig overrides for every run
    jobs: 2                                                     # units at once (executor.max_parallel wins)
    executor: {kind: slurm, slurm: {partition: gpu}}            # inline | local | submitit_local | slurm
    resources: {gpus: 1, cpus: 8, time_min: 60}                 # per (model, dataset) unit; models may override
    on_missing_embeddings: error                                # or skip: record the run as skipped, counted

Relative paths are relative to the YAML file's directory (:mod:`medvl.experiments.benchmark_paths`).

``executor`` and ``resources`` are :mod:`medvl.config.executor`'s schemas, the ones experiments use.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from medvl.config.base import StrictModel
from medvl.config.executor import ExecutorConfig, ResourceSpec

__all__ = ["BENCHMARK_TASKS", "BenchmarkConfig", "DatasetEntry", "ModelEntry"]

#: medvl evaluation tasks a benchmark run can hold (one results file per model × dataset × task).
BENCHMARK_TASKS: tuple[str, ...] = ("retrieval", "zeroshot", "probe", "classification")
BenchTask = Literal["retrieval", "zeroshot", "probe", "classification"]


class ModelEntry(StrictModel):
    """One model: a checkpoint spec the model front door accepts, or exported embeddings."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    #: anything the model front door ``medvl.models.loading.load_model`` accepts (medvl run/model dir, HF, open_clip, timm)
    spec: str | None = None
    #: exported EmbeddingSet directories, a template with ``{dataset}`` and ``{split}``
    embeddings: str | None = None
    #: checkpoint of a medvl run directory
    which: Literal["best", "last"] = "best"
    #: EvaluationConfig overrides for this model only (e.g. its ``data`` settings)
    eval: dict[str, Any] = Field(default_factory=dict)
    #: what this model's units ask the scheduler for, over the benchmark's ``resources`` (a large model: more GPU memory)
    resources: ResourceSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelEntry:
        if (self.spec is None) == (self.embeddings is None):
            raise ValueError(f"model {self.name!r}: give exactly one of spec or embeddings")
        if self.embeddings is not None and "{dataset}" not in self.embeddings:
            raise ValueError(f"model {self.name!r}: embeddings must be a template containing {{dataset}} (and {{split}})")
        return self


class DatasetEntry(StrictModel):
    """One dataset (a manifest) or a shipped collection of them."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    manifest: str | None = None
    #: image root when it is not the one stored with the manifest
    root: str | None = None
    #: a shipped collection (``cxr-transfer``, ``benchmarking-25``) whose manifests live in ``data_dir``
    collection: str | None = None
    data_dir: str | None = None
    #: ``auto`` (from the dataset's task kinds) or a list
    tasks: Literal["auto"] | list[BenchTask] | None = None
    #: EvaluationConfig overrides for this dataset only (prompt files, probe protocol, …)
    eval: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetEntry:
        if self.collection is not None:
            if self.manifest is not None or self.data_dir is None:
                raise ValueError(f"collection {self.collection!r}: give data_dir (where its manifests are), not manifest")
        elif self.manifest is None or self.name is None:
            raise ValueError("a dataset needs name and manifest (or collection and data_dir)")
        return self


class BenchmarkConfig(StrictModel):
    """``medvl benchmark`` settings."""

    models: list[ModelEntry] = Field(min_length=1)
    datasets: list[DatasetEntry] = Field(min_length=1)
    tasks: Literal["auto"] | list[BenchTask] = "auto"
    #: EvaluationConfig overrides applied to every run (dataset and model overrides go on top)
    eval: dict[str, Any] = Field(default_factory=dict)
    #: (model, dataset) units run at once (``executor.max_parallel`` wins when set)
    jobs: int = Field(default=1, ge=1)
    #: where units run: inline, local worker processes, submitit's local executor or SLURM
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    #: what each (model, dataset) unit asks the scheduler for (GPUs, CPUs, memory, time)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    #: split evaluated (the probe also reads train and, for its C search, val)
    split: Literal["train", "val", "test"] = "test"
    #: a failing run is recorded and the others go on (false: stop at the first failure)
    keep_going: bool = True
    #: an exported-embeddings split a run needs is missing: ``error`` (before anything is written, naming the
    #: model, dataset and expected file) or ``skip`` (the run is recorded as skipped, with that reason, and counted)
    on_missing_embeddings: Literal["error", "skip"] = "error"

    @model_validator(mode="after")
    def _unique_names(self) -> BenchmarkConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return self
