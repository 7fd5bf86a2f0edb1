"""A tiny real experiment on synthetic data for CLI sweep tests (a few seconds per cell)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

CLS = "classification/findings/map_macro"
MEDVL = str(Path(sys.executable).with_name("medvl"))


def write_experiment(root: Path, *, folds: list[int], epochs: int = 1, jobs: int = 1,
                     executor: str = "auto") -> Path:
    """Data under ``root/data``, ``root/run.yaml`` and ``root/experiment.yaml`` (one stage per fold)."""
    from medvl.data.synthetic.generator import SynthConfig, generate_dataset

    if not (root / "data" / "manifest.parquet").is_file():
        generate_dataset(root / "data", SynthConfig(n=40, seed=1, size=32, n_folds=max(2, max(folds) + 1), test_fraction=0.25))
    run: dict[str, Any] = {
        "seed": 0,
        "data": {"manifest": str(root / "data" / "manifest.parquet"), "image_size": 32, "channels": 1,
                 "caption": {"mode": "join"}},
        "model": {
            "embed_dim": 16,
            "vision": {"kind": "tiny_cnn", "in_channels": 1, "widths": [8, 16]},
            "text": {"kind": "tiny_text", "vocab_size": 256, "max_length": 48, "width": 16, "depth": 1, "heads": 2},
            "classifiers": {"findings": {"kind": "multilabel", "num_classes": 10}},
        },
        "objective": {"balance": 0.5, "terms": [{"name": "clip", "kind": "clip"},
                                                {"name": "bce", "kind": "bce", "options": {"task": "findings"}}]},
        "training": {"epochs": epochs, "batch_size": 8, "drop_last": True, "optimizer": {"lr": 1e-3},
                     "logging": {"progress_bar": False}},
    }
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
