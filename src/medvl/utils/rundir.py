"""Run directories: created once, never overwritten unless the user asks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from medvl.utils.errors import UserInputError

__all__ = ["RunDirExistsError", "prepare_run_dir"]


class RunDirExistsError(UserInputError, FileExistsError):
    """Raised when a run directory already holds results and ``overwrite`` was not given."""


def prepare_run_dir(path: str | os.PathLike[str], overwrite: bool = False, resume: bool = False) -> Path:
    """Create ``path`` for a new run.

    An existing non-empty directory is an error unless ``overwrite`` (its contents are removed)
    or ``resume`` (it is kept as is, for continuing a run) is set.
    """
    run_dir = Path(path)
    if run_dir.exists() and any(run_dir.iterdir()):
        if resume:
            return run_dir
        if not overwrite:
            raise RunDirExistsError(
                f"run directory {run_dir} already exists and is not empty; "
                "pass --overwrite to replace it or --resume to continue it"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
