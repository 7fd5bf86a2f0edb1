"""Executors: where the jobs of a sweep or a benchmark run.

One small interface over four engines, so the scheduler (:mod:`medvl.experiments.jobs`) does not
care where a job runs::

    with build_executor(ExecutorConfig(kind="submitit_local"), out_dir, jobs=2) as executor:
        handle = executor.submit(fn, (arg1, arg2), name="cell-3", resources=Resources(gpus=1))
        ...
        if handle.done():
            value = handle.result()          # re-raises the job's error (JobFailed for remote jobs)

* :class:`InlineExecutor` — runs the job in this process at ``submit`` (one at a time);
* :class:`LocalProcessExecutor` — a pool of ``spawn`` worker processes on this machine, each
  given its share of the cores, and each killed with the controller (``PR_SET_PDEATHSIG`` +
  a watchdog, :mod:`medvl.utils.processes`);
* :class:`SubmititExecutor` — submitit's ``LocalExecutor`` (a process tree per job, logs in the
  job folder; the jobs die with the controller too) or ``SlurmExecutor`` (``sbatch`` jobs with
  per-job GPU/CPU/memory/time requests; they outlive the controller and a later controller
  re-attaches to them with :meth:`Executor.reattach`).

Functions given to ``submit`` must be importable top-level functions with picklable arguments.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.config.executor import ExecutorConfig, ResourceSpec
from medvl.utils.errors import UserInputError
from medvl.utils.processes import ProcessIdentity, die_with

__all__ = [
    "Executor",
    "ExecutorUnavailableError",
    "InlineExecutor",
    "JobFailed",
    "JobHandle",
    "LocalProcessExecutor",
    "Resources",
    "SubmititExecutor",
    "build_executor",
    "job_rank",
]

DEFAULT_TIME_MIN = 240
SLURM_ALIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
                                "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING"})


class ExecutorUnavailableError(UserInputError, RuntimeError):
    """The executor the config names cannot run here (no SLURM client on this machine)."""


class JobFailed(RuntimeError):
    """A job ended with an error (the message holds its exception and, for remote jobs, its log path)."""


@dataclass(frozen=True)
class Resources:
    """What one job asks for. ``tasks_per_node`` × ``nodes`` processes run the job function."""

    gpus: int = 0
    cpus: int | None = None
    mem_gb: float | None = None
    time_min: int = DEFAULT_TIME_MIN
    tasks_per_node: int = 1
    nodes: int = 1

    @classmethod
    def from_spec(cls, spec: ResourceSpec | None, *, tasks_per_node: int = 1, nodes: int = 1) -> Resources:
        """Resources from a config section (``None`` fields take the defaults)."""
        spec = spec or ResourceSpec()
        return cls(gpus=spec.gpus or 0, cpus=spec.cpus, mem_gb=spec.mem_gb,
                   time_min=spec.time_min or DEFAULT_TIME_MIN, tasks_per_node=tasks_per_node, nodes=nodes)


def job_rank() -> int:
    """Global rank of this task inside a multi-task job (0 outside jobs and for single-task jobs)."""
    for name in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        value = os.environ.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return 0


class JobHandle(ABC):
    """A submitted job."""

    job_id: str

    @abstractmethod
    def done(self) -> bool:
        """Whether the job has ended (successfully or not)."""

    @abstractmethod
    def result(self) -> Any:
        """The job function's return value (blocks until done); raises the job's error."""

    def cancel(self) -> None:  # noqa: B027 - optional: not every engine can stop a job
        """Stop the job (best effort)."""


class Executor(ABC):
    """Runs jobs somewhere; use as a context manager so local workers are stopped on exit."""

    kind: str = "executor"
    #: jobs that may run (or be queued) at once
    capacity: int = 1

    @abstractmethod
    def submit(self, fn: Callable[..., Any], args: Sequence[Any], *, name: str,
               resources: Resources = Resources()) -> JobHandle:
        """Start ``fn(*args)`` as a job."""

    def reattach(self, job_id: str) -> JobHandle | None:
        """A handle on an earlier controller's job that is still queued or running, else ``None``.

        Only cluster jobs survive their controller; local executors return ``None``.
        """
        return None

    def wait(self, handles: Sequence[JobHandle], poll_s: float = 1.0) -> list[JobHandle]:
        """Block until at least one of ``handles`` is done; returns the done ones."""
        while True:
            finished = [h for h in handles if h.done()]
            if finished or not handles:
                return finished
            time.sleep(poll_s)

    def close(self) -> None:  # noqa: B027 - optional: only local executors hold workers
        """Release workers (local executors stop theirs)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
class _DoneHandle(JobHandle):
    def __init__(self, job_id: str, value: Any = None, error: BaseException | None = None) -> None:
        self.job_id = job_id
        self._value = value
        self._error = error

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class InlineExecutor(Executor):
    """Runs each job in this process, at ``submit`` (sequential; exceptions keep their traceback)."""

    kind = "inline"
    capacity = 1

    def __init__(self) -> None:
        self._count = 0

    def submit(self, fn: Callable[..., Any], args: Sequence[Any], *, name: str,
               resources: Resources = Resources()) -> JobHandle:
        self._count += 1
        job_id = f"inline-{os.getpid()}-{self._count}"
        try:
            return _DoneHandle(job_id, value=fn(*args))
        except Exception as exc:  # handed to the scheduler, which records it
            return _DoneHandle(job_id, error=exc)


# ---------------------------------------------------------------------------------------------
def _local_worker_init(threads: int, controller: ProcessIdentity) -> None:
    """Pool initializer: die with the controller; this worker's share of the cores for torch/BLAS."""
    die_with(controller, direct_parent=True)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _noop() -> None:
    """Warm-up task: makes the pool start a worker process."""


class _FutureHandle(JobHandle):
    def __init__(self, job_id: str, future: futures.Future[Any]) -> None:
        self.job_id = job_id
        self.future = future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> Any:
        return self.future.result()

    def cancel(self) -> None:
        self.future.cancel()


class LocalProcessExecutor(Executor):
    """``workers`` spawned processes on this machine; each gets ``cpu_count // workers`` threads."""

    kind = "local"

    def __init__(self, workers: int) -> None:
        self.capacity = max(1, workers)
        self.threads = max(1, (os.cpu_count() or 1) // self.capacity)
        self._pool = futures.ProcessPoolExecutor(
            max_workers=self.capacity, mp_context=multiprocessing.get_context("spawn"),
            initializer=_local_worker_init, initargs=(self.threads, ProcessIdentity.current()),
        )
        self._count = 0
        for _ in range(self.capacity):  # start every worker now: they import torch while the first job runs
            self._pool.submit(_noop)

    def submit(self, fn: Callable[..., Any], args: Sequence[Any], *, name: str,
               resources: Resources = Resources()) -> JobHandle:
        self._count += 1
        return _FutureHandle(f"local-{os.getpid()}-{self._count}", self._pool.submit(fn, *args))

    def wait(self, handles: Sequence[JobHandle], poll_s: float = 1.0) -> list[JobHandle]:
        by_future = {h.future: h for h in handles if isinstance(h, _FutureHandle)}
        if len(by_future) == len(handles) and handles:
            finished, _ = futures.wait(by_future, return_when=futures.FIRST_COMPLETED)
            return [by_future[f] for f in finished]
        return super().wait(handles, poll_s)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------------------------------------
def _guarded_call(controller: dict[str, Any] | None, fn: Callable[..., Any], *args: Any) -> Any:
    """Job entry point for submitit: die with the controller (local jobs), then run ``fn``."""
    if controller is not None:
        die_with(ProcessIdentity.from_dict(controller))
    return fn(*args)


def _last_error_line(text: str) -> str:
    """``ValueError: …`` from submitit's failure text (the traceback sits between two dashed rules)."""
    parts = text.split("-" * 22)
    body = parts[1] if len(parts) >= 3 else text
    lines = [line for line in body.strip().splitlines() if line.strip() and not line.startswith(" ")]
    return lines[-1] if lines else text.strip().splitlines()[0]


class _SubmititHandle(JobHandle):
    def __init__(self, job: Any) -> None:
        self.job = job
        self.job_id = str(job.job_id)

    def done(self) -> bool:
        return bool(self.job.done())

    def result(self) -> Any:
        try:
            return self.job.result()
        except Exception as exc:
            from submitit.core.utils import FailedJobError, UncompletedJobError

            if isinstance(exc, (FailedJobError, UncompletedJobError)):
                raise JobFailed(f"{_last_error_line(str(exc))} (job {self.job_id}; log: {self.job.paths.stderr})"
                                ) from exc
            raise

    def cancel(self) -> None:
        self.job.cancel(check=False)


class SubmititExecutor(Executor):
    """submitit's local executor (``cluster="local"``) or SLURM executor (``cluster="slurm"``)."""

    def __init__(self, cluster: str, folder: str | os.PathLike[str], *, capacity: int,
                 slurm: Any = None) -> None:
        import submitit

        if cluster not in ("local", "slurm"):
            raise ValueError(f"submitit cluster must be 'local' or 'slurm', got {cluster!r}")
        self.kind = "submitit_local" if cluster == "local" else "slurm"
        self.cluster = cluster
        self.folder = Path(folder)
        self.capacity = max(1, capacity)
        self.slurm = slurm
        if cluster == "local":
            self._executor: Any = submitit.LocalExecutor(self.folder / "%j")
        else:
            try:
                self._executor = submitit.SlurmExecutor(self.folder / "%j")
            except RuntimeError as exc:  # no srun on PATH
                raise ExecutorUnavailableError(
                    f"executor.kind=slurm, but this machine has no SLURM client ({exc}); run the sweep or "
                    "benchmark on a login node, or use executor.kind=submitit_local") from exc
        self._controller = ProcessIdentity.current().to_dict() if cluster == "local" else None

    def _parameters(self, name: str, resources: Resources) -> dict[str, Any]:
        if self.cluster == "local":
            if resources.nodes > 1:
                raise ValueError(f"job {name}: submitit's local executor runs on one node, "
                                 f"{resources.nodes} were asked for; use executor.kind=slurm")
            return {"timeout_min": resources.time_min, "gpus_per_node": resources.gpus,
                    "tasks_per_node": resources.tasks_per_node, "nodes": 1}
        params: dict[str, Any] = {
            "job_name": name[:120], "time": resources.time_min, "nodes": resources.nodes,
            "ntasks_per_node": resources.tasks_per_node, "cpus_per_task": resources.cpus or 4,
        }
        if resources.gpus:
            params["gpus_per_node"] = resources.gpus
        if resources.mem_gb is not None:
            params["mem"] = f"{int(resources.mem_gb * 1024)}MB"
        options = self.slurm
        if options is not None:
            for key in ("partition", "account", "qos", "constraint"):
                value = getattr(options, key)
                if value is not None:
                    params[key] = value
            if options.additional:
                params["additional_parameters"] = dict(options.additional)
            if options.setup:
                params["setup"] = list(options.setup)
        return params

    def submit(self, fn: Callable[..., Any], args: Sequence[Any], *, name: str,
               resources: Resources = Resources()) -> JobHandle:
        self._executor.update_parameters(**self._parameters(name, resources))
        job = self._executor.submit(_guarded_call, self._controller, fn, *args)
        return _SubmititHandle(job)

    def reattach(self, job_id: str) -> JobHandle | None:
        if self.cluster != "slurm":
            return None  # local jobs die with their controller
        import submitit

        job: Any = submitit.SlurmJob(self.folder / "%j", job_id)
        try:
            state = str(job.state).upper()
        except Exception:  # sacct unavailable: the run lock of the cell still prevents a double run
            return None
        return _SubmititHandle(job) if state.split()[0] in SLURM_ALIVE_STATES else None


def build_executor(cfg: ExecutorConfig | None, out_dir: str | os.PathLike[str], *, jobs: int = 1) -> Executor:
    """The executor ``cfg`` names; ``jobs`` is the default capacity (``cfg.max_parallel`` wins)."""
    cfg = cfg or ExecutorConfig()
    capacity = cfg.max_parallel or jobs
    kind = cfg.kind
    if kind == "auto":
        kind = "inline" if capacity <= 1 else "local"
    if kind == "inline":
        return InlineExecutor()
    if kind == "local":
        return LocalProcessExecutor(capacity)
    folder = cfg.folder if cfg.folder is not None else Path(out_dir) / ".jobs"
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"executor.kind={kind} needs submitit: pip install 'medvl[cluster]'") from exc
    return SubmititExecutor("local" if kind == "submitit_local" else "slurm", folder, capacity=capacity,
                            slurm=cfg.slurm)
