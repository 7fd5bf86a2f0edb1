"""Executors: the same job on every engine, errors that name the job, SLURM requests from resources."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the job functions live next to this file

from _jobs_helpers import add, fail, where

from medvl.config.executor import ExecutorConfig, ResourceSpec, SlurmOptions
from medvl.experiments.executors import (
    InlineExecutor,
    JobFailed,
    LocalProcessExecutor,
    Resources,
    SubmititExecutor,
    build_executor,
)


def test_inline_runs_at_submit_and_keeps_the_exception() -> None:
    with InlineExecutor() as ex:
        assert ex.submit(add, (2, 3), name="a").result() == 5
        handle = ex.submit(fail, ("boom",), name="b")
        assert handle.done()
        with pytest.raises(ValueError, match="boom"):
            handle.result()


def test_local_processes_share_the_cores(tmp_path: Path) -> None:
    with LocalProcessExecutor(2) as ex:
        handles = [ex.submit(where, (i,), name=f"j{i}") for i in range(2)]
        results = [h.result() for h in handles]
        with pytest.raises(ValueError, match="boom"):
            ex.submit(fail, ("boom",), name="bad").result()
    import os

    assert all(r["pid"] != os.getpid() for r in results)
    assert {r["threads"] for r in results} == {max(1, (os.cpu_count() or 1) // 2)}


@pytest.mark.slow
def test_submitit_local_runs_jobs_and_names_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    with build_executor(ExecutorConfig(kind="submitit_local"), tmp_path, jobs=2) as ex:
        assert isinstance(ex, SubmititExecutor) and ex.capacity == 2
        ok = ex.submit(add, (20, 22), name="ok", resources=Resources(time_min=5))
        bad = ex.submit(fail, ("broken cell",), name="bad", resources=Resources(time_min=5))
        assert ok.result() == 42
        with pytest.raises(JobFailed, match=r"ValueError: broken cell .*log: "):
            bad.result()
    assert list((tmp_path / ".jobs").glob("*/*_log.err"))  # submitit's per-job logs in the sweep's job folder


def test_slurm_job_script_carries_the_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    with pytest.raises(RuntimeError, match="no SLURM client"):
        SubmititExecutor("slurm", tmp_path / "jobs", capacity=1)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{__import__('os').environ['PATH']}")
    options = SlurmOptions(partition="gpu", account="rad", constraint="a100", additional={"exclude": "n01"},
                           setup=["module load cuda"])
    ex = SubmititExecutor("slurm", tmp_path / "jobs", capacity=8, slurm=options)
    spec = ResourceSpec(gpus=2, cpus=8, mem_gb=48, time_min=90)
    params = ex._parameters("tune[λ=0.5,fold=0,seed=0]", Resources.from_spec(spec, tasks_per_node=2, nodes=2))
    ex._executor.update_parameters(**params)
    script = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=rad", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=49152MB", "#SBATCH --time=90", "#SBATCH --nodes=2",
                 "#SBATCH --ntasks-per-node=2", "#SBATCH --constraint=a100", "#SBATCH --exclude=n01",
                 "module load cuda"):
        assert line in script, line
    assert ex.capacity == 8 and ex.kind == "slurm"


def test_resources_merge_stage_over_experiment() -> None:
    base = ResourceSpec(gpus=1, cpus=4, time_min=60)
    merged = base.merged(ResourceSpec(gpus=2))
    assert (merged.gpus, merged.cpus, merged.time_min) == (2, 4, 60)
    assert Resources.from_spec(ResourceSpec()).time_min == 240


def test_auto_executor_choice(tmp_path: Path) -> None:
    assert build_executor(None, tmp_path, jobs=1).kind == "inline"
    ex = build_executor(ExecutorConfig(), tmp_path, jobs=2)
    try:
        assert ex.kind == "local" and ex.capacity == 2
    finally:
        ex.close()
