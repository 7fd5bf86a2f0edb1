"""A resumable scheduler for many jobs (sweep cells, benchmark cells) on any executor.

Each job has a *state directory* (its cell directory) holding two small JSON files, so a rerun
after a crash or a ``kill -9`` of the controller knows where every job stands:

* ``job.json`` — written by the controller when it submits: executor kind, job id, submission
  time, the controller's host and PID, the attempt number;
* ``job_state.json`` — written by the job itself (task 0): ``running`` (host, PID, start) when
  it starts, then ``finished`` or ``failed`` (with the error) when it ends.

What marks a job as *done* is the caller's business (a sweep cell is done when its
``cell_results.json`` exists); done jobs are skipped. An unfinished job whose SLURM job is
still queued or running is re-attached instead of resubmitted; local jobs die with their
controller, so on rerun they are resubmitted (their own run directories resume from
checkpoints). Jobs start once the jobs they depend on are done; a failed job blocks only its
dependants.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medvl.experiments.executors import Executor, JobHandle, Resources, job_rank
from medvl.utils.io import atomic_write_json, read_json
from medvl.utils.processes import ProcessIdentity

__all__ = [
    "JOB_FILE",
    "JOB_STATE_FILE",
    "Job",
    "JobsSummary",
    "job_status",
    "run_jobs",
]

JOB_FILE = "job.json"
JOB_STATE_FILE = "job_state.json"
#: how long a rerun waits for a previous controller's local worker to die before giving up
PREVIOUS_WORKER_GRACE_S = 15.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Job:
    """One unit of work. ``fn(*args)`` must be an importable function with picklable arguments."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    state_dir: Path
    resources: Resources = field(default_factory=Resources)
    after: tuple[str, ...] = ()
    """Keys of jobs that must be done before this one starts."""
    done: bool = False
    """Already done (skipped)."""


@dataclass
class JobsSummary:
    """What a scheduler run did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    reattached: list[str] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    """Jobs left unstarted because ``on_end`` asked to stop."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no job failed."""
        return not self.failed


def tracked_call(state_dir: str, key: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Job entry point: records ``running`` / ``finished`` / ``failed`` in ``job_state.json`` around ``fn``."""
    path = Path(state_dir) / JOB_STATE_FILE
    writer = job_rank() == 0
    me = ProcessIdentity.current()
    started = _now()
    if writer:
        atomic_write_json(path, {"key": key, "state": "running", "process": me.to_dict(), "started": started})
    try:
        value = fn(*args)
    except BaseException as exc:
        if writer:
            atomic_write_json(path, {"key": key, "state": "failed", "process": me.to_dict(), "started": started,
                                     "ended": _now(), "error": f"{type(exc).__name__}: {exc}",
                                     "traceback": traceback.format_exc()[-4000:]})
        raise
    if writer:
        atomic_write_json(path, {"key": key, "state": "finished", "process": me.to_dict(), "started": started,
                                 "ended": _now()})
    return value


def job_status(state_dir: Path, done: bool) -> dict[str, Any]:
    """Where one job stands: ``finished``, ``running``, ``queued``, ``failed``, ``interrupted`` or ``pending``.

    ``interrupted``: it started but its process is gone without recording an end (killed);
    ``running`` on another host or on a cluster cannot be verified from here and says so.
    """
    submitted, state = _read(state_dir / JOB_FILE), _read(state_dir / JOB_STATE_FILE)
    info: dict[str, Any] = {"job_id": submitted.get("job_id"), "executor": submitted.get("executor"),
                            "submitted": submitted.get("submitted"), "attempt": submitted.get("attempt")}
    if done:
        return {"status": "finished", **info, "ended": state.get("ended")}
    if not submitted and not state:
        return {"status": "pending", **info}
    current = state.get("state")
    if current == "failed":
        return {"status": "failed", **info, "error": state.get("error")}
    if current == "running":
        process = ProcessIdentity.from_dict(state["process"])
        alive = process.is_alive()
        status = "interrupted" if alive is False else "running"
        return {"status": status, **info, "process": process.to_dict(), "started": state.get("started"),
                "verified": alive is not None}
    if current == "finished":  # ran to the end but the caller's done marker is missing
        return {"status": "interrupted", **info}
    return {"status": "queued", **info}


def _previous_local_worker(state_dir: Path) -> ProcessIdentity | None:
    """The process of a previous attempt that still runs on this host, if any."""
    state = _read(state_dir / JOB_STATE_FILE)
    if state.get("state") != "running" or "process" not in state:
        return None
    process = ProcessIdentity.from_dict(state["process"])
    return process if process.is_alive() else None


def _wait_previous(job: Job) -> None:
    """A killed controller's workers stop within a second or two; refuse to run a job twice at once."""
    deadline = time.monotonic() + PREVIOUS_WORKER_GRACE_S
    while (previous := _previous_local_worker(job.state_dir)) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{job.key} is still being run by process {previous.pid} on {previous.host} "
                f"(a previous controller's worker); stop it or wait for it before rerunning"
            )
        time.sleep(0.25)


def run_jobs(
    jobs: Sequence[Job],
    executor: Executor,
    *,
    log: Callable[[str], None] = print,
    fail_fast: bool = False,
    first_alone: bool = False,
    poll_s: float = 1.0,
    on_end: Callable[[Job, Any, BaseException | None], bool] | None = None,
) -> JobsSummary:
    """Run every job not already done on ``executor``, respecting ``after`` dependencies.

    ``first_alone``: the first job runs by itself before any other starts (when nothing is done
    yet), so files later jobs share (a feature cache) are filled once, in a fixed order.
    A failing job is recorded with its error and its dependants are not started; the others go on
    unless ``fail_fast`` (then the error is re-raised).

    ``on_end(job, value, error)`` is called when a job ends, with its return value (``error`` None)
    or its error; returning False starts no further job (running ones finish; the rest are
    listed in ``not_started``).
    """
    started = time.perf_counter()
    summary = JobsSummary()
    by_key = {job.key: job for job in jobs}
    done: set[str] = set()
    blocked: set[str] = set()
    queue: list[Job] = []
    for job in jobs:
        if job.done:
            summary.skipped.append(job.key)
            done.add(job.key)
        else:
            queue.append(job)
    for job in queue:
        for dep in job.after:
            if dep not in by_key:
                raise ValueError(f"job {job.key} depends on unknown job {dep}")
    total = len(queue)
    running: dict[str, tuple[JobHandle, Job]] = {}
    index = 0

    def reattach(job: Job) -> JobHandle | None:
        record = _read(job.state_dir / JOB_FILE)
        if record.get("executor") != executor.kind or not record.get("job_id"):
            return None
        return executor.reattach(str(record["job_id"]))

    while queue or running:
        capacity = executor.capacity if (done or summary.failed or not first_alone) else 1
        for job in list(queue):
            if any(dep in blocked for dep in job.after):
                queue.remove(job)
                blocked.add(job.key)
                summary.failed[job.key] = "not run: a job it depends on failed"
                continue
            if len(running) >= capacity or not all(dep in done for dep in job.after):
                continue
            queue.remove(job)
            index += 1
            handle = reattach(job)
            if handle is not None:
                summary.reattached.append(job.key)
                log(f"[reattached {index}/{total}] {job.key} (job {handle.job_id})")
            else:
                _wait_previous(job)
                attempt = int(_read(job.state_dir / JOB_FILE).get("attempt", 0)) + 1
                log(f"[start {index}/{total}] {job.key}")
                job.state_dir.mkdir(parents=True, exist_ok=True)
                handle = executor.submit(tracked_call, (str(job.state_dir), job.key, job.fn, *job.args),
                                         name=job.key, resources=job.resources)
                atomic_write_json(job.state_dir / JOB_FILE, {
                    "key": job.key, "executor": executor.kind, "job_id": handle.job_id, "submitted": _now(),
                    "attempt": attempt, "controller": ProcessIdentity.current().to_dict(),
                    "resources": vars(job.resources)})
            running[job.key] = (handle, job)
            if len(running) >= capacity:
                break
        if not running:
            break
        finished = executor.wait([handle for handle, _ in running.values()], poll_s=poll_s)
        for handle in finished:
            key = next(k for k, (h, _) in running.items() if h is handle)
            _, job = running.pop(key)
            try:
                value = handle.result()
            except Exception as exc:
                blocked.add(key)
                summary.failed[key] = f"{type(exc).__name__}: {exc}"
                log(f"[failed] {key}: {summary.failed[key]}")
                if fail_fast:
                    for other, _ in running.values():
                        other.cancel()
                    raise
                go_on = on_end(job, None, exc) if on_end is not None else True
            else:
                done.add(key)
                summary.ran.append(key)
                log(f"[done] {key}")
                go_on = on_end(job, value, None) if on_end is not None else True
            if not go_on and queue:
                summary.not_started += [j.key for j in queue]
                queue.clear()
    summary.seconds = time.perf_counter() - started
    return summary
