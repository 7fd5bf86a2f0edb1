"""A tiny real experiment on synthetic data for CLI sweep tests (a few seconds per cell)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from _synthetic_run import synthetic_run_config

CLS = "classification/findings/map_macro"
MEDVL = str(Path(sys.executable).with_name("medvl"))


def write_experiment(root: Path, *, folds: list[int], epochs: int = 1, jobs: int = 1,
                     executor: str = "auto") -> Path:
    """Data under ``root/data``, ``root/run.yaml`` and ``root/experiment.yaml`` (one stage per fold)."""
    from medvl.data.synthetic.generator import SynthConfig, generate_dataset

    if not (root / "data" / "manifest.parquet").is_file():
        generate_dataset(root / "data", SynthConfig(n=40, seed=1, size=32, n_folds=max(2, max(folds) + 1), test_fraction=0.25))
    run = synthetic_run_config(root / "data" / "manifest.parquet", balance=0.5, epochs=epochs, batch_size=8,
                               drop_last=True, optimizer={"lr": 1e-3})
    (root / "run.yaml").write_text(yaml.safe_dump(run))
    experiment = {
        "name": "tiny", "jobs": jobs, "executor": {"kind": executor, "poll_s": 0.2},
        "grid": {"lambdas": [0.5], "folds": folds, "seeds": [0]},
        "stages": [{"name": "classifier", "config": "run.yaml", "over_lambda": False,
                    "set": ["data.fold={fold}"], "selection": {"metric": f"val/{CLS}", "mode": "max"}}],
        "classification_metric": CLS,
    }
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment, allow_unicode=True))
    return path


def medvl(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([MEDVL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def start_medvl(*args: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("wb") as handle:
        return subprocess.Popen([MEDVL, *args], cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env)


def wait_until(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")
