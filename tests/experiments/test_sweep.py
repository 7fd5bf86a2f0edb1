"""The sweep scheduler: dependency order, skip-finished on rerun, failures isolate dependants."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medvl.config.experiment import ExperimentConfig
from medvl.experiments.grid import Cell, expand_cells, parent_cell, substitute_placeholders
from medvl.experiments.sweep import cell_is_finished, run_sweep
from medvl.utils.io import atomic_write_json, read_json


def _config(jobs: int = 1) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "grid": {"lambdas": [0.5, 1.0], "folds": [0, 1], "seeds": [3]},
            "stages": [
                {"name": "classifier", "inline": {}, "over_lambda": False, "set": ["seed={seed}"]},
                {"name": "tune", "inline": {}, "init_from": "classifier", "set": ["objective.balance={lambda}"]},
            ],
            "jobs": jobs,
            "classification_metric": "classification/findings/map_macro",
        }
    )


def recording_runner(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> None:
    """Top-level (picklable) runner that writes a minimal result and a log line."""
    parent = parent_cell(config, cell)
    if parent is not None:
        assert (sweep_dir / parent.relpath / "cell_results.json").is_file(), "parent must finish first"
    import torch

    with (sweep_dir / "calls.log").open("a") as handle:
        handle.write(cell.key + "\n")
    with (sweep_dir / "threads.log").open("a") as handle:
        handle.write(f"{torch.get_num_threads()}\n")
    atomic_write_json(sweep_dir / cell.relpath / "cell_results.json", {"cell": cell.as_dict()})


def timed_runner(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> None:
    """Records when each cell starts and ends (a short sleep makes concurrency visible)."""
    import time

    start = time.time()
    time.sleep(0.3)
    with (sweep_dir / "times.log").open("a") as handle:
        handle.write(f"{cell.key}\t{start}\t{time.time()}\n")
    atomic_write_json(sweep_dir / cell.relpath / "cell_results.json", {"cell": cell.as_dict()})


class Killed(RuntimeError):
    pass


def test_grid_order_and_placeholders() -> None:
    cfg = _config()
    cells = expand_cells(cfg)
    assert [c.stage for c in cells] == ["classifier"] * 2 + ["tune"] * 4
    tune = cells[2]
    assert parent_cell(cfg, tune) == Cell("classifier", None, tune.fold, tune.seed)
    assert substitute_placeholders(["a={lambda}", "b={fold}", "c={seed}"], tune) == ["a=0.5", "b=0", "c=3"]
    assert str(tune.relpath) == "tune/lambda=0.5/fold=0/seed=3"
    with pytest.raises(ValueError, match="over_lambda"):
        substitute_placeholders(["x={lambda}"], cells[0])


def test_rerun_skips_finished_cells_after_a_kill(tmp_path: Path) -> None:
    cfg = _config()
    calls = {"n": 0}

    def dying_runner(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise Killed("simulated kill between cells")
        recording_runner(config, cell, sweep_dir, experiment_dir)

    with pytest.raises(Killed):
        run_sweep(cfg, tmp_path, dying_runner, fail_fast=True, log=lambda _: None)
    first = (tmp_path / "calls.log").read_text().split()
    assert len(first) == 3
    summary = run_sweep(cfg, tmp_path, recording_runner, log=lambda _: None)
    assert sorted(summary.skipped) == sorted(first)
    assert len(summary.ran) == 3
    all_calls = (tmp_path / "calls.log").read_text().split()
    assert len(all_calls) == 6 and len(set(all_calls)) == 6  # no finished cell recomputed
    assert all(cell_is_finished(tmp_path, c) for c in expand_cells(cfg))
    assert read_json(tmp_path / "sweep_status.json")["failed"] == {}


def test_failure_blocks_only_dependants(tmp_path: Path) -> None:
    cfg = _config()

    def runner(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> None:
        if cell.stage == "classifier" and cell.fold == 1:
            raise ValueError("bad fold")
        recording_runner(config, cell, sweep_dir, experiment_dir)

    summary = run_sweep(cfg, tmp_path, runner, log=lambda _: None)
    assert len(summary.ran) == 3  # classifier fold 0 + its two tune cells
    assert len(summary.failed) == 3
    assert "ValueError: bad fold" in summary.failed["classifier[λ=-,fold=1,seed=3]"]


def test_parallel_jobs_respect_dependencies(tmp_path: Path) -> None:
    summary = run_sweep(_config(jobs=2), tmp_path, recording_runner, log=lambda _: None)
    assert summary.ok and len(summary.ran) == 6
    # each worker gets its share of the cores, not all of them (no oversubscription)
    threads = {int(t) for t in (tmp_path / "threads.log").read_text().split()}
    assert threads == {max(1, (os.cpu_count() or 1) // 2)}


def test_first_cell_of_a_fresh_parallel_sweep_runs_alone(tmp_path: Path) -> None:
    """Shared files (a frozen tower's feature cache) are then filled once, independent of timing."""
    summary = run_sweep(_config(jobs=2), tmp_path, timed_runner, log=lambda _: None)
    assert summary.ok
    rows = [line.split("\t") for line in (tmp_path / "times.log").read_text().splitlines()]
    spans = sorted((float(start), float(end), key) for key, start, end in rows)
    first_end = spans[0][1]
    assert spans[0][2] == "classifier[λ=-,fold=0,seed=3]"
    assert all(start >= first_end for start, _, _ in spans[1:])


def test_directory_of_another_experiment_is_refused(tmp_path: Path) -> None:
    run_sweep(_config(), tmp_path, recording_runner, log=lambda _: None)
    other = _config().model_copy(update={"name": "other"})
    with pytest.raises(ValueError, match="different experiment"):
        run_sweep(other, tmp_path, recording_runner, log=lambda _: None)


def test_config_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="must name an earlier stage"):
        ExperimentConfig.model_validate({"classification_metric": "m",
                                         "stages": [{"name": "a", "inline": {}, "init_from": "b"}]})
    with pytest.raises(ValueError, match=r"λ must lie in \[0, 1\]"):
        ExperimentConfig.model_validate({"classification_metric": "m", "grid": {"lambdas": [1.5]},
                                         "stages": [{"name": "a", "inline": {}}]})


def test_cell_state_files_and_status(tmp_path: Path) -> None:
    from medvl.experiments.jobs import JOB_FILE, JOB_STATE_FILE
    from medvl.experiments.sweep import sweep_status

    def runner(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> None:
        if cell.stage == "classifier" and cell.fold == 1:
            raise ValueError("bad fold")
        recording_runner(config, cell, sweep_dir, experiment_dir)

    run_sweep(_config(), tmp_path, runner, log=lambda _: None)
    rows = {row["cell"]: row for row in sweep_status(tmp_path)}
    assert rows["classifier[λ=-,fold=0,seed=3]"]["status"] == "finished"
    assert rows["classifier[λ=-,fold=1,seed=3]"]["status"] == "failed"
    assert "ValueError: bad fold" in rows["classifier[λ=-,fold=1,seed=3]"]["error"]
    assert rows["tune[λ=0.5,fold=1,seed=3]"]["status"] == "pending"  # blocked: never submitted
    cell_dir = tmp_path / "classifier/lambda=-/fold=0/seed=3"
    assert read_json(cell_dir / JOB_FILE)["executor"] == "inline"
    # a worker killed mid-cell leaves "running" with a dead process: reported as interrupted
    dead = {"host": __import__("socket").gethostname(), "pid": 2**22 + 7, "start": 1}
    atomic_write_json(tmp_path / "classifier/lambda=-/fold=1/seed=3" / JOB_STATE_FILE,
                      {"state": "running", "process": dead, "started": "x"})
    rows = {row["cell"]: row for row in sweep_status(tmp_path)}
    assert rows["classifier[λ=-,fold=1,seed=3]"]["status"] == "interrupted"


class _Reattaching:
    """An executor whose cluster still runs the jobs an earlier controller submitted."""

    kind = "slurm"
    capacity = 4

    def __init__(self, alive: set[str]) -> None:
        self.alive = alive
        self.submitted: list[str] = []

    def reattach(self, job_id: str) -> object | None:
        from medvl.experiments.executors import InlineExecutor

        if job_id not in self.alive:
            return None
        return InlineExecutor().submit(lambda: None, (), name=job_id)

    def submit(self, fn, args, *, name, resources):  # type: ignore[no-untyped-def]
        from medvl.experiments.executors import InlineExecutor

        self.submitted.append(name)
        return InlineExecutor().submit(fn, args, name=name)

    def wait(self, handles, poll_s=1.0):  # type: ignore[no-untyped-def]
        return list(handles)

    def close(self) -> None:
        pass


def test_rerun_reattaches_jobs_still_queued_on_the_cluster(tmp_path: Path) -> None:
    from medvl.experiments.jobs import JOB_FILE

    cfg = _config()
    cells = expand_cells(cfg)
    for cell, job_id in ((cells[0], "101"), (cells[1], "102")):  # a killed controller had submitted these
        atomic_write_json(tmp_path / cell.relpath / JOB_FILE, {"executor": "slurm", "job_id": job_id})
    ex = _Reattaching(alive={"101"})
    summary = run_sweep(cfg, tmp_path, recording_runner, log=lambda _: None, executor=ex)  # type: ignore[arg-type]
    assert summary.reattached == [cells[0].key]
    assert cells[0].key not in ex.submitted and cells[1].key in ex.submitted  # 102 had ended: resubmitted
