"""#12/#16: ``kill -9`` of ``medvl sweep`` takes its workers down; a rerun resubmits only unfinished cells."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from _tiny_sweep import medvl, start_medvl, wait_until, write_experiment

from medvl.utils.processes import ProcessIdentity, descendants

pytestmark = pytest.mark.slow
EPOCHS = 40  # a few seconds per cell: long enough to kill the sweep while cells train


def _states(sweep: Path) -> dict[str, dict]:
    out = {}
    for path in sweep.glob("classifier/*/*/*/job_state.json"):
        try:
            out[path.parent.parts[-2]] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


def _finished(sweep: Path) -> set[str]:
    return {p.parent.parts[-2] for p in sweep.glob("classifier/*/*/*/cell_results.json")}


def _kill_and_check(proc, sweep: Path, running: list[dict]) -> None:  # type: ignore[no-untyped-def]
    # every process the controller started (busy and idle workers, submitit's job controllers, their children)
    family = [ProcessIdentity.of(pid) for pid in descendants(proc.pid)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    workers = [ProcessIdentity.from_dict(state["process"]) for state in running] + family
    assert len(workers) > len(running)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(w.is_alive() for w in workers):
        time.sleep(0.1)
    assert not any(w.is_alive() for w in workers), "workers kept training after their controller was killed"
    # nothing writes into the sweep directory any more
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file()}
    time.sleep(1.5)
    after = {p: p.stat().st_mtime_ns for p in sweep.rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.parametrize(("executor", "jobs"), [("local", 2), ("submitit_local", 1)])
def test_sigkilled_sweep_stops_its_workers_and_rerun_runs_only_unfinished_cells(
        tmp_path: Path, executor: str, jobs: int) -> None:
    folds = [0, 1, 2] if jobs == 2 else [0, 1]
    experiment = write_experiment(tmp_path, folds=folds, epochs=EPOCHS)
    sweep = tmp_path / "sweep"
    log = tmp_path / "first.log"
    proc = start_medvl("sweep", str(experiment), "--out", "sweep", "--jobs", str(jobs), "--executor", executor,
                       "--no-report", cwd=tmp_path, log=log)
    try:
        # the first cell of a fresh sweep runs alone; then `jobs` cells run at once: kill the controller then
        def busy() -> bool:  # (how many cells overlap depends on how fast workers start on a loaded machine)
            running = [s for k, s in _states(sweep).items() if s.get("state") == "running" and k not in _finished(sweep)]
            return len(_finished(sweep)) >= 1 and len(running) >= 1
        wait_until(busy, 900, "a finished cell and running workers", proc, log)
        running = [s for k, s in _states(sweep).items() if s.get("state") == "running" and k not in _finished(sweep)]
        _kill_and_check(proc, sweep, running)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = _finished(sweep)
    stamps = {k: (sweep / "classifier/lambda=-" / k / "seed=0/cell_results.json").stat().st_mtime_ns
              for k in done_before}
    status = medvl("sweep", "--out", "sweep", "--status", cwd=tmp_path)
    assert status.returncode == 0 and "interrupted" in status.stdout, status.stdout + status.stderr

    rerun = medvl("sweep", str(experiment), "--out", "sweep", "--jobs", str(jobs), "--executor", executor,
                  "--no-report", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(done_before)} of {len(folds)} cells already finished" in rerun.stdout
    started = [line for line in rerun.stdout.splitlines() if line.startswith("[start")]
    assert len(started) == len(folds) - len(done_before)  # only unfinished cells were resubmitted
    assert _finished(sweep) == {f"fold={k}" for k in folds}
    for key, stamp in stamps.items():  # finished cells untouched
        assert (sweep / "classifier/lambda=-" / key / "seed=0/cell_results.json").stat().st_mtime_ns == stamp
    for fold in folds:  # every cell trained each epoch exactly once (resumed, never run twice at once)
        epochs = [json.loads(line)["epoch"] for line in
                  (sweep / f"classifier/lambda=-/fold={fold}/seed=0/run/logs/epochs.jsonl").read_text().splitlines()]
        assert epochs == list(range(EPOCHS + 1))
    final = medvl("sweep", "--out", "sweep", "--status", cwd=tmp_path)
    assert f"{len(folds)} finished (of {len(folds)} cells)" in final.stdout
