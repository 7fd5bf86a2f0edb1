"""Importable job functions for executor tests (submitit and spawn workers import them by name)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def add(a: int, b: int) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def where(_: int) -> dict[str, object]:
    import torch

    return {"pid": os.getpid(), "threads": torch.get_num_threads()}


def sleep_and_record(pid_file: str, seconds: float) -> None:
    """Write this process's PID, then sleep (a stand-in for a long training cell)."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
