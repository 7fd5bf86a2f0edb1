"""Reading model weights that a training run saved: which checkpoint (``best``/``last`` pointers) and
loading its ``model.safetensors`` into a module.

The write side (checkpoint directories, pointers, pruning, optimizer/RNG state) is
:mod:`medvl.training.checkpoint`; this read side lives with the models so that the model front
door (:mod:`medvl.models.loading`) loads trained models without importing the training package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import safetensors.torch as st
import torch
from torch import nn

from medvl.utils.errors import UserInputError
from medvl.utils.io import read_json

__all__ = [
    "CHECKPOINT_DIR",
    "EMA_WEIGHTS_FILE",
    "CheckpointError",
    "evaluation_weights",
    "load_model_weights",
    "read_checkpoint_json",
    "resolve_checkpoint",
    "safetensors_keys",
]

CHECKPOINT_DIR = "checkpoints"
#: the moving average of the weights (``training.ema``), next to ``model.safetensors`` in a checkpoint
EMA_WEIGHTS_FILE = "ema.safetensors"


class CheckpointError(UserInputError, RuntimeError):
    """A checkpoint is missing, incomplete or does not fit the model/optimizer; the message names the file."""


def read_checkpoint_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, truncated or non-object file is a CheckpointError naming it."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: corrupt {what} (expected a JSON object, got {type(data).__name__})")
    return data


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a safetensors file (header only); a truncated or corrupt file is a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with st.safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:  # SafetensorError (truncated header/data), OSError
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from None


def load_model_weights(
    module: nn.Module, path: str | os.PathLike[str], strict: bool = True, allow_missing: bool = False
) -> list[str]:
    """Load ``path`` (safetensors) into ``module`` on its own device; errors name the file and keys.

    ``allow_missing``: parameters of ``module`` absent from the file keep their values (returned,
    sorted); tensors of the file that ``module`` lacks are still an error.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"weights file not found: {file}")
    safetensors_keys(file)  # a truncated file is named as such, not as a misfit
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        missing, unexpected = st.load_model(module, file, strict=strict and not allow_missing, device=str(device))
    except RuntimeError as exc:
        raise CheckpointError(f"{file}: weights do not fit {type(module).__name__}: {exc}") from exc
    except Exception as exc:  # SafetensorError on data the header did not reveal
        raise CheckpointError(f"{file}: corrupt safetensors file ({exc})") from None
    if allow_missing and unexpected:
        raise CheckpointError(f"{file}: weights do not fit {type(module).__name__}: unexpected {sorted(unexpected)}")
    return sorted(missing) if allow_missing else []


def evaluation_weights(checkpoint: str | os.PathLike[str]) -> Path:
    """The weights a checkpoint is evaluated with: its weight average when the run kept one
    (``training.ema``), else ``model.safetensors`` (the training weights, which resume uses)."""
    directory = Path(checkpoint)
    ema = directory / EMA_WEIGHTS_FILE
    return ema if ema.is_file() else directory / "model.safetensors"


def resolve_checkpoint(path: str | os.PathLike[str], which: Literal["best", "last"] = "best") -> Path:
    """A checkpoint directory from a run directory, a ``checkpoints`` directory or a checkpoint directory.

    For a run directory, ``which`` picks the pointer; ``best`` falls back to ``last`` when the run
    never validated.
    """
    target = Path(path)
    if (target / "state.json").is_file() or (target / "model.safetensors").is_file():
        return target
    base = target / CHECKPOINT_DIR if (target / CHECKPOINT_DIR).is_dir() else target
    for name in ((which, "last") if which == "best" else (which,)):
        pointer = base / f"{name}.json"
        if pointer.is_file():
            target_dir = read_checkpoint_json(pointer, f"checkpoint pointer {name}.json").get("dir")
            if not isinstance(target_dir, str) or not target_dir:
                raise CheckpointError(f"{pointer}: corrupt checkpoint pointer (no 'dir')")
            chosen = base / target_dir
            if not chosen.is_dir():
                raise CheckpointError(f"{pointer} points at {chosen}, which does not exist")
            return chosen
    raise CheckpointError(f"no checkpoint found under {target} (looked for {which}.json in {base})")
