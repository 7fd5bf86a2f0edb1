"""#16: ``medvl benchmark`` schedules its (model, dataset) units as jobs on the sweep's executors —
inline, local processes, submitit's local executor (SLURM's code path) — with per-unit resources,
job state under ``<out>/units/`` and, after ``kill -9`` of the controller, a rerun that resubmits
only the units with unfinished runs and recomputes no finished run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _bench_tiny import exported_dataset, write_benchmark

from medvl.config.benchmark import BenchmarkConfig
from medvl.experiments.benchmark import run_benchmark
from medvl.utils.processes import ProcessIdentity

MEDVL = str(Path(sys.executable).with_name("medvl"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the CLI tests run from the benchmark directory


def _config(path: Path, **changes: object) -> BenchmarkConfig:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    return BenchmarkConfig.model_validate(data)


def _results(out: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}


def test_units_run_as_jobs_with_their_resources_and_state(tmp_path: Path) -> None:
    for name in ("a", "b"):
        exported_dataset(tmp_path, name)
    bench = write_benchmark(tmp_path, ["a", "b"], extra={
        "resources": {"cpus": 2, "time_min": 30},
        "models": [{"name": "exported", "embeddings": "exported/{dataset}/{split}", "resources": {"time_min": 5}}]})
    out = tmp_path / "out"
    lines: list[str] = []
    summary = run_benchmark(_config(bench), out, base_dir=tmp_path, log=lines.append)
    assert summary.ok and sorted(summary.ran) == ["a_exported_probe", "a_exported_retrieval",
                                                  "b_exported_probe", "b_exported_retrieval"]
    assert [line for line in lines if line.startswith("[start")] == ["[start 1/2] a_exported", "[start 2/2] b_exported"]
    job = json.loads((out / "units" / "a_exported" / "job.json").read_text())
    assert job["executor"] == "inline" and job["attempt"] == 1
    assert job["resources"]["cpus"] == 2 and job["resources"]["time_min"] == 5  # the model's over the benchmark's
    assert json.loads((out / "units" / "b_exported" / "job_state.json").read_text())["state"] == "finished"
    status = json.loads((out / "benchmark_status.json").read_text())
    assert status["executor"] == "inline" and len(status["ran"]) == 4 and status["failed"] == {}
    assert (out / "leaderboard.csv").is_file()

    # where units run is not what they compute: new resources and capacity recompute nothing
    before = _results(out)
    again = run_benchmark(_config(bench, resources={"cpus": 1, "time_min": 90}, jobs=2), out, base_dir=tmp_path,
                          log=lines.append)
    assert again.ran == [] and len(again.skipped) == 4 and _results(out) == before
    assert any("4 already finished; 0 of 2 (model, dataset) units to run" in line for line in lines)


def test_keep_going_false_starts_no_unit_after_a_failure(tmp_path: Path) -> None:
    for name in ("a", "b"):
        exported_dataset(tmp_path, name)
    bench = write_benchmark(tmp_path, ["a", "b"], extra={"keep_going": False})
    cfg = _config(bench)
    train = tmp_path / "exported" / "a" / "train" / "embeddings.safetensors"
    train.write_bytes(train.read_bytes()[:64])  # a truncated train split: the probe fails in unit a
    summary = run_benchmark(cfg, tmp_path / "out", base_dir=tmp_path, log=lambda _: None)
    assert list(summary.failed) == ["a_exported_probe"] and "embeddings.safetensors" in summary.failed["a_exported_probe"]
    assert summary.ran == ["a_exported_retrieval"] and summary.not_started == ["b_exported"]
    status = json.loads((tmp_path / "out" / "benchmark_status.json").read_text())
    assert status["not_started"] == ["b_exported"] and not (tmp_path / "out" / "units" / "b_exported").exists()


def test_a_unit_whose_job_dies_fails_its_unfinished_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medvl.experiments.benchmark as benchmark

    exported_dataset(tmp_path, "a")
    bench = write_benchmark(tmp_path, ["a"])

    def killed(unit: object, out_dir: str) -> dict[str, str]:
        raise MemoryError("out of memory")  # stands for a worker or SLURM job that ended without a result

    monkeypatch.setattr(benchmark, "run_unit", killed)
    summary = run_benchmark(_config(bench), tmp_path / "out", base_dir=tmp_path, log=lambda _: None)
    assert summary.failed == {"a_exported_retrieval": "MemoryError: out of memory",
                              "a_exported_probe": "MemoryError: out of memory"}
    state = json.loads((tmp_path / "out" / "units" / "a_exported" / "job_state.json").read_text())
    assert state["state"] == "failed" and "out of memory" in state["error"]
    monkeypatch.undo()  # the fixed rerun runs both
    assert run_benchmark(_config(bench), tmp_path / "out", base_dir=tmp_path, log=lambda _: None).ok


def test_a_benchmark_directory_in_use_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from medvl.utils.rundir import RunDirLock, RunDirLockedError

    exported_dataset(tmp_path, "a")
    bench = write_benchmark(tmp_path, ["a"])
    with RunDirLock(tmp_path / "out"), pytest.raises(RunDirLockedError, match=str(os.getpid())):
        run_benchmark(_config(bench), tmp_path / "out", base_dir=tmp_path, log=lambda _: None)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".medvl.lock"]  # the holder's own


def test_an_unknown_executor_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    exported_dataset(tmp_path, "a")
    write_benchmark(tmp_path, ["a"])
    r = subprocess.run([MEDVL, "benchmark", "bench.yaml", "--out", "out", "--executor", "cloud"], cwd=tmp_path,
                       env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "executor.kind" in r.stderr and not (tmp_path / "out").exists(), r.stderr
    if shutil.which("srun") is None:  # a SLURM executor without a SLURM client: exit 2, nothing left behind
        r = subprocess.run([MEDVL, "benchmark", "bench.yaml", "--out", "out", "--executor", "slurm"], cwd=tmp_path,
                           env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "no SLURM client" in r.stderr and not (tmp_path / "out").exists(), r.stderr


@pytest.mark.slow
def test_benchmark_through_submitit_local_end_to_end(tmp_path: Path) -> None:
    for name in ("a", "b"):
        exported_dataset(tmp_path, name)
    bench = write_benchmark(tmp_path, ["a", "b"], extra={"executor": {"kind": "submitit_local", "poll_s": 0.2},
                                                         "resources": {"time_min": 10}, "jobs": 2})
    out = tmp_path / "out"
    summary = run_benchmark(_config(bench), out, base_dir=tmp_path, log=lambda _: None)
    assert summary.ok and len(summary.ran) == 4, summary.failed
    for unit in ("a_exported", "b_exported"):
        job = json.loads((out / "units" / unit / "job.json").read_text())
        state = json.loads((out / "units" / unit / "job_state.json").read_text())
        assert job["executor"] == "submitit_local" and job["resources"]["time_min"] == 10
        assert state["state"] == "finished" and state["process"]["pid"] != os.getpid()  # ran in submitit's process
        assert (out / ".jobs" / job["job_id"]).is_dir()  # submitit's job folder: pickles and logs
    doc = json.loads((out / "results" / "b_exported_retrieval.json").read_text())
    assert doc["task"] == "zeroshot_retrieval" and doc["metrics"]
    assert json.loads((out / "benchmark_status.json").read_text())["executor"] == "submitit_local"
    assert len((out / "leaderboard.csv").read_text().splitlines()) == 2


def _unit_state(out: Path, unit: str) -> dict:
    try:
        return json.loads((out / "units" / unit / "job_state.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_sigkilled_benchmark_reruns_only_unfinished_units(tmp_path: Path) -> None:
    exported_dataset(tmp_path, "small")
    exported_dataset(tmp_path, "large", n_train=20000, dim=256, seed=1)  # its probe (96 C values) takes seconds
    write_benchmark(tmp_path, ["small", "large"])
    out, results = tmp_path / "out", tmp_path / "out" / "results"
    args = [MEDVL, "benchmark", "bench.yaml", "--out", "out", "--executor", "submitit_local"]
    log = tmp_path / "first.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=handle, stderr=subprocess.STDOUT)
    try:
        # kill when unit `small` is finished and unit `large` has its retrieval written and its probe running
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if (results / "large_exported_retrieval.json").is_file() and _unit_state(out, "large_exported").get(
                    "state") == "running":
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the benchmark ended before it could be killed:\n" + log.read_text()[-3000:]
        assert not (results / "large_exported_probe.json").exists()
        worker = ProcessIdentity.from_dict(_unit_state(out, "large_exported")["process"])
        assert worker.pid != proc.pid  # the unit runs in submitit's job process
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.1)
    assert not worker.is_alive(), "the unit's job kept running after its controller was killed"
    finished = _results(out)
    assert set(finished) == {"small_exported_retrieval", "small_exported_probe", "large_exported_retrieval"}

    rerun = subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "3 already finished; 1 of 2 (model, dataset) units to run" in rerun.stdout
    started = [line for line in rerun.stdout.splitlines() if line.startswith("[start")]
    assert started == ["[start 1/1] large_exported"]  # only the unfinished unit was resubmitted
    after = _results(out)
    assert {k: after[k] for k in finished} == finished  # no finished run recomputed, not even in the resubmitted unit
    assert set(after) == set(finished) | {"large_exported_probe"}
    status = json.loads((out / "benchmark_status.json").read_text())
    assert status["ran"] == ["large_exported_probe"] and sorted(status["skipped"]) == sorted(finished)
    assert json.loads((out / "units" / "large_exported" / "job.json").read_text())["attempt"] == 2
    assert json.loads((out / "units" / "small_exported" / "job.json").read_text())["attempt"] == 1
