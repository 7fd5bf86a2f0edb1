"""Schemas for where many runs execute (``executor:``) and what each asks for (``resources:``).

Used by ``medvl sweep`` (one job per cell) and ``medvl benchmark`` (one job per model ×
dataset cell); the engine is :mod:`medvl.experiments.executors`.

Example (an experiment on a SLURM cluster)::

    executor:
      kind: slurm                 # inline | local | submitit_local | slurm
      max_parallel: 16            # jobs queued/running at once (default: jobs)
      slurm: {partition: gpu, account: radiology, qos: normal, additional: {constraint: a100}}
    resources: {gpus: 1, cpus: 8, mem_gb: 48, time_min: 240}
    stages:
      - name: tune
        resources: {gpus: 2, time_min: 600}   # per-stage, merged over the experiment's

``gpus`` is per node; a cell whose run config has ``training.devices: N`` and
``training.num_nodes: M`` runs as ``N`` tasks on each of ``M`` nodes (one process per device),
which Lightning Fabric picks up from SLURM's environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medvl.config.base import StrictModel

__all__ = ["ExecutorConfig", "ExecutorKind", "ResourceSpec", "SlurmOptions"]

ExecutorKind = Literal["auto", "inline", "local", "submitit_local", "slurm"]


class ResourceSpec(StrictModel):
    """What one job asks the scheduler for; ``None`` = inherit (from the experiment) or the default."""

    gpus: int | None = Field(default=None, ge=0)
    """GPUs per node (default 0)."""
    cpus: int | None = Field(default=None, ge=1)
    """CPU cores per task (default: the machine's cores shared out over parallel jobs locally, 4 on SLURM)."""
    mem_gb: float | None = Field(default=None, gt=0)
    """Memory per node in GB (default: the scheduler's)."""
    time_min: int | None = Field(default=None, ge=1)
    """Wall-time limit in minutes (default 240)."""

    def merged(self, override: ResourceSpec | None) -> ResourceSpec:
        """These values with every field ``override`` sets replaced."""
        if override is None:
            return self
        return self.model_copy(update=override.model_dump(exclude_none=True))


class SlurmOptions(StrictModel):
    """SLURM specifics passed to ``sbatch`` through submitit."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    additional: dict[str, str | int] = Field(default_factory=dict)
    """Any other ``#SBATCH --key=value`` line, e.g. ``{exclude: "node[01-03]"}``."""
    setup: list[str] = Field(default_factory=list)
    """Shell lines run before the job (``module load cuda``, ``source venv/bin/activate``)."""


class ExecutorConfig(StrictModel):
    """Where jobs run.

    * ``inline`` — one after another in this process (debuggers work; ``jobs`` is ignored);
    * ``local`` — up to ``max_parallel`` worker processes on this machine;
    * ``submitit_local`` — submitit's local executor (each job in its own process tree, logs
      under ``folder``), the same code path as SLURM without a cluster;
    * ``slurm`` — submitit's SLURM executor: each job is an ``sbatch`` job; jobs outlive the
      controlling process, and a rerun re-attaches to those still queued or running;
    * ``auto`` — ``inline`` for one job at a time, ``local`` otherwise.

    Local workers (``local`` and ``submitit_local``) die with the controlling process, even
    when it is killed with ``SIGKILL``.
    """

    kind: ExecutorKind = "auto"
    max_parallel: int | None = Field(default=None, ge=1)
    """Jobs running (or queued, on SLURM) at once; default: the experiment's ``jobs``."""
    folder: Path | None = None
    """submitit's job folder (pickles, stdout/stderr per job); default ``<out>/.jobs``. On SLURM it
    must be on a filesystem the compute nodes share."""
    poll_s: float = Field(default=2.0, gt=0)
    """How often the controller checks running jobs."""
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
