"""Helpers of the reliability suite: a tiny on-disk dataset, run configs, and the ``medvl`` command.

Every test here does what a user would: runs ``medvl`` (in a subprocess, or ``main([...])`` in
process), on real files, with real kills. ``python -m medvl`` is used for subprocesses so the
command runs the ``medvl`` package found on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from _training_data import run_config_dict, write_tiny_dataset


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A fresh tiny dataset (24 PNGs, train/val/test) under ``tmp_path/data``; returns its manifest."""
    return write_tiny_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset shared by a module's tests (read only)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


def write_config(path: Path, manifest: Path | str, **training: Any) -> Path:
    """A small run config (tiny CNN + tiny text tower, CLIP + BCE) written to ``path``."""
    data = run_config_dict(Path(manifest), None, **training)
    data["evaluation"] = {"validation": {"tasks": []}}  # the objective's validation loss only (speed)
    data["data"]["manifest"] = str(manifest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def medvl_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``medvl ARGS`` run in this process (``main([...])``): (exit code, stdout, stderr)."""
    from medvl.cli.main import main

    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:  # pragma: no cover - typer always exits
        code = 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_one_epoch(folder: Path, manifest: Path) -> tuple[Path, Path]:
    """(config, run dir) of a finished 1-epoch run of :func:`write_config`'s model, under ``folder``."""
    from medvl.cli.main import main

    config = write_config(folder / "run.yaml", manifest, epochs=1)
    try:
        main(["train", str(config), "--out", str(folder / "run")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return config, folder / "run"


def medvl_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "medvl", *args]


def run_medvl(*args: str, cwd: Path | None = None, timeout: float = 300,
              env: dict[str, str] | None = None, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``medvl ARGS`` to completion in a subprocess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    preexec: Callable[[], Any] | None = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(medvl_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=full_env, preexec_fn=preexec)


def start_medvl(*args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``medvl ARGS`` in the background (its own process group, so a kill reaches its workers)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen(medvl_cmd(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


def wait_for(condition: Callable[[], bool], timeout: float = 120, what: str = "condition",
             proc: subprocess.Popen[str] | None = None) -> None:
    """Poll ``condition`` until true (fail after ``timeout`` s, or when ``proc`` ends first)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def kill9(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the process group of ``proc`` and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            kill9(proc)
