"""Concurrency: one writer per run directory (the run-directory lock), stale locks after kill -9."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import kill9, run_medvl, start_medvl, wait_for, write_config


def _started(run: Path) -> bool:
    steps = run / "logs" / "steps.jsonl"
    return steps.is_file() and steps.stat().st_size > 0


@pytest.mark.slow
def test_second_train_on_a_running_run_is_refused_naming_the_holder(
        tmp_path: Path, tiny_data: Path, background: list[subprocess.Popen[str]]) -> None:
    """Two `medvl train --resume` on one run: the second stops at once, naming the first (no interleaving)."""
    config = write_config(tmp_path / "run.yaml", tiny_data, epochs=500)
    run = tmp_path / "run"
    first = start_medvl("train", str(config), "--out", str(run), "--resume")
    background.append(first)
    wait_for(lambda: _started(run), what="the first run to train", proc=first)
    second = run_medvl("train", str(config), "--out", str(run), "--resume", timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"in use by PID {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert first.poll() is None  # the first run is unharmed
    kill9(first)
    epochs = [json.loads(line)["epoch"] for line in (run / "logs" / "epochs.jsonl").read_text().splitlines()]
    assert len(epochs) == len(set(epochs))  # no duplicated epochs from a second writer


@pytest.mark.slow
def test_lock_of_a_killed_run_is_stale_and_resume_takes_it_over(
        tmp_path: Path, tiny_data: Path, background: list[subprocess.Popen[str]]) -> None:
    """kill -9 leaves the lock file; the kernel released the lock, so --resume reports the dead holder and goes on."""
    config = write_config(tmp_path / "run.yaml", tiny_data, epochs=500, checkpoint={"every_n_steps": 1})
    run = tmp_path / "run"
    first = start_medvl("train", str(config), "--out", str(run))
    background.append(first)
    wait_for(lambda: (run / "checkpoints" / "last.json").is_file(), what="a checkpoint", proc=first)
    dead = first.pid
    kill9(first)
    resumed = run_medvl("train", str(config), "--out", str(run), "--resume", "--set", "training.epochs=1",
                        timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"stale lock of PID {dead}" in resumed.stderr


@pytest.mark.parametrize("command", ["evaluate", "align-study", "sweep"])
def test_every_writing_command_takes_the_lock(tmp_path: Path, shared_data: Path, command: str,
                                              background: list[subprocess.Popen[str]]) -> None:
    """evaluate, align study and sweep refuse an output directory another live process holds."""
    out = tmp_path / "out"
    out.mkdir()
    # a live holder: a process that locks the directory and waits
    holder = subprocess.Popen(
        [__import__("sys").executable, "-c",
         "import sys, time; from medvl.utils.rundir import RunDirLock; l = RunDirLock(sys.argv[1]); l.acquire(); "
         "print('locked', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    background.append(holder)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    if command == "evaluate":
        args = ["evaluate", "--data", str(shared_data), "--hf-model", str(tmp_path / "nomodel"), "--out", str(out),
                "--overwrite"]
    elif command == "align-study":
        study = tmp_path / "study.yaml"
        study.write_text(json.dumps({"entries": [{"model": "m", "dataset": "d", "embeddings": "nowhere"}]}))
        args = ["align", "study", str(study), "--out", str(out), "--overwrite"]
    else:
        exp = tmp_path / "exp.yaml"
        write_config(tmp_path / "stage.yaml", shared_data, epochs=1)
        exp.write_text(json.dumps({"name": "e", "grid": {"lambdas": [0.5], "folds": [None], "seeds": [0]},
                                   "stages": [{"name": "s", "config": "stage.yaml"}]}))
        args = ["sweep", str(exp), "--out", str(out)]
    result = run_medvl(*args, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"in use by PID {holder.pid}" in result.stderr
