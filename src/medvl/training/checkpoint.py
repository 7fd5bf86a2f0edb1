"""Checkpoints without pickled code: weights and tensors as safetensors, everything else as JSON.

Layout under ``RUN_DIR/checkpoints``::

    step-00000120-e3/            one checkpoint (always at an optimizer-step boundary)
        model.safetensors        model weights (shared tensors stored once)
        objective.safetensors    objective parameters/buffers, when it has any
        optimizer.safetensors    optimizer state tensors, keys "<param index>.<name>"
        rng.rank<r>.safetensors  torch generator states of process r
        state.json               epoch/step counters, sampler position, scheduler, optimizer
                                 param groups, RNG (Python/NumPy) per process, callbacks, provenance
    last.json                    {"dir": "step-…"} pointer to the newest checkpoint
    best.json                    {"dir": "step-…", "metric", "value", "epoch"} pointer to the best

A checkpoint directory is written under a temporary name and renamed when complete; the
pointers are replaced atomically afterwards and only then are unreferenced directories
deleted, so a killed process always leaves the previous ``last`` (and ``best``) loadable.
Loading reads safetensors and JSON only; nothing from a checkpoint is ever unpickled.
:func:`verify_checkpoint` checks a checkpoint's files (JSON parses, every safetensors header
covers its file) without loading tensors, so a truncated or corrupt file is reported as a
:class:`CheckpointError` naming it before anything else happens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import safetensors.torch as st
import torch
from torch import nn

from medvl import __version__
from medvl.models.weights import (
    CHECKPOINT_DIR,
    EMA_WEIGHTS_FILE,
    CheckpointError,
    load_model_weights,
    read_checkpoint_json,
    resolve_checkpoint,
    safetensors_keys,
)
from medvl.utils.io import atomic_write_json, read_json, to_jsonable

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "CheckpointManager",
    "load_model_weights",
    "load_optimizer_state",
    "optimizer_state_tensors",
    "resolve_checkpoint",
    "verify_checkpoint",
]

_STEP_DIR = re.compile(r"^step-\d{8}-e\d+(\.\d+)?$")


def verify_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a training checkpoint's files without loading tensors; returns its ``state.json``.

    Every JSON file must parse and every safetensors file's header must cover the file
    (a truncated file fails); errors are :class:`CheckpointError` naming the file.
    """
    root = Path(directory)
    if not (root / "state.json").is_file():
        raise CheckpointError(f"{root} has no state.json (not a training checkpoint)")
    payload = read_checkpoint_json(root / "state.json", "checkpoint state")
    for key in ("epoch", "global_step", "trainer", "optimizer"):
        if key not in payload:
            raise CheckpointError(f"{root / 'state.json'}: corrupt checkpoint state (no {key!r})")
    files = ["model.safetensors"]
    optimizer = payload["optimizer"]
    if isinstance(optimizer, dict) and optimizer.get("sharded"):  # FSDP: one optimizer shard per process
        files += sorted(p.name for p in root.glob("optimizer.rank*.safetensors"))
    else:
        files.append("optimizer.safetensors")
    if payload.get("has_objective_state"):
        files.append("objective.safetensors")
    if (root / EMA_WEIGHTS_FILE).exists():
        files.append(EMA_WEIGHTS_FILE)
    files += sorted(p.name for p in root.glob("rng.rank*.safetensors"))
    for name in files:
        safetensors_keys(root / name)
    return payload


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split ``optimizer.state_dict()`` into JSON (param groups, non-tensor state) and tensors."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                local = value.to_local() if hasattr(value, "to_local") else value  # FSDP: this process's shard
                tensors[f"{index}.{key}"] = local.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return {"param_groups": to_jsonable(state["param_groups"]), "scalars": to_jsonable(scalars)}, tensors


def load_optimizer_state(optimizer: torch.optim.Optimizer, json_part: dict[str, Any],
                         tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`optimizer_state_tensors`; tensors are moved to each parameter's device."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index_text, key = name.split(".", 1)
        index = int(index_text)
        if index >= len(params):
            raise CheckpointError(f"optimizer state names parameter {index}, the optimizer has {len(params)}")
        # AdamW keeps "step" on the CPU unless capturable/fused; everything else sits with the parameter.
        param = params[index]
        device = param.device if tensor.ndim > 0 else tensor.device
        value = tensor.to(device)
        if tensor.ndim > 0 and hasattr(param, "device_mesh"):  # FSDP: a shard of a DTensor parameter
            from torch.distributed.tensor import DTensor

            value = DTensor.from_local(value, param.device_mesh, param.placements, run_check=False,
                                       shape=param.shape, stride=param.stride())
        state.setdefault(index, {})[key] = value
    for index_text, entries in json_part.get("scalars", {}).items():
        state.setdefault(int(index_text), {}).update(entries)
    groups = json_part["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state does not fit this optimizer: {exc}") from exc


@dataclass
class SavedCheckpoint:
    """Where a checkpoint went."""

    path: Path
    is_best: bool


class CheckpointManager:
    """Writes, points at and prunes checkpoints of one run (see the module docstring).

    In a multi-process run every process must call :meth:`save` (each stores its RNG state);
    ``barrier`` synchronises them and ``rank`` 0 writes the shared files.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, rank: int = 0, world_size: int = 1,
                 barrier: Callable[[], None] | None = None, sharded: bool = False) -> None:
        self.root = Path(run_dir) / CHECKPOINT_DIR
        self.sharded = sharded
        """FSDP: every process writes and reads its own optimizer shard (``optimizer.rank<r>.safetensors``)."""
        self.rank = rank
        self.world_size = world_size
        self._barrier = barrier or (lambda: None)
        if rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)

    # -- writing ---------------------------------------------------------------------------
    def save(
        self,
        *,
        epoch: int,
        global_step: int,
        model: nn.Module,
        objective: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        rng: tuple[dict[str, Any], dict[str, torch.Tensor]],
        best: dict[str, Any] | None = None,
        extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
        model_state: dict[str, torch.Tensor] | None = None,
        objective_state: dict[str, torch.Tensor] | None = None,
    ) -> SavedCheckpoint:
        """Write a checkpoint; mark it ``best`` when ``best`` (metric, value, epoch) is given.

        ``extra_tensors``: more safetensors files process 0 writes into the checkpoint, by file name
        (e.g. ``ema.safetensors``, the weight average). ``model_state``/``objective_state``: full
        state dicts to write instead of the modules' own (FSDP gathers them on every process).

        ``state`` holds the JSON-able trainer state (counters, sampler, scheduler, callbacks);
        ``rng`` is this process's :func:`~medvl.training.rng.capture_rng_state`; every process
        stores its own in ``rng.rank<r>.safetensors`` (JSON part in the file's metadata).
        """
        name = f"step-{global_step:08d}-e{epoch}"
        final = self.root / name
        suffix = 0
        while final.exists():  # e.g. re-saving after a resume: never touch an existing directory
            suffix += 1
            final = self.root / f"{name}.{suffix}"
        tmp = self.root / f".tmp-{name}"
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self._barrier()
        st.save_file(rng[1], str(tmp / f"rng.rank{self.rank}.safetensors"),
                     metadata={"rng_json": json.dumps(rng[0])})
        if self.sharded:
            shard_json, shard_tensors = optimizer_state_tensors(optimizer)
            st.save_file(shard_tensors, str(tmp / f"optimizer.rank{self.rank}.safetensors"),
                         metadata={"optimizer_json": json.dumps(shard_json)})
        self._barrier()
        if self.rank == 0:
            if model_state is not None:
                st.save_file(model_state, str(tmp / "model.safetensors"), metadata={"medvl_version": __version__})
            else:
                st.save_model(model, str(tmp / "model.safetensors"), metadata={"medvl_version": __version__})
            if objective_state is not None:
                if objective_state:
                    st.save_file(objective_state, str(tmp / "objective.safetensors"))
            elif objective is not None and len(objective.state_dict()) > 0:
                st.save_model(objective, str(tmp / "objective.safetensors"))
            for file_name, tensors in (extra_tensors or {}).items():
                st.save_file(tensors, str(tmp / file_name), metadata={"medvl_version": __version__})
            opt_json: dict[str, Any] = {"sharded": True}
            if not self.sharded:
                opt_json, opt_tensors = optimizer_state_tensors(optimizer)
                st.save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
            payload = {
                "medvl_version": __version__,
                "epoch": epoch,
                "global_step": global_step,
                "world_size": self.world_size,
                "trainer": state,
                "optimizer": opt_json,
                "has_objective_state": (tmp / "objective.safetensors").is_file(),
            }
            atomic_write_json(tmp / "state.json", payload)
            _fsync_dir(tmp)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            atomic_write_json(self.root / "last.json", {"dir": final.name, "epoch": epoch, "global_step": global_step})
            if best is not None:
                atomic_write_json(self.root / "best.json", {"dir": final.name, **best, "global_step": global_step})
            self._prune()
        self._barrier()
        return SavedCheckpoint(final, best is not None)

    def _referenced(self) -> set[str]:
        names = set()
        for pointer in ("last.json", "best.json"):
            file = self.root / pointer
            if file.is_file():
                names.add(read_json(file)["dir"])
        return names

    def _prune(self) -> None:
        keep = self._referenced()
        for child in self.root.iterdir():
            if child.is_dir() and (child.name.startswith(".tmp-") or _STEP_DIR.match(child.name)) \
                    and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        """Whether a ``last`` checkpoint exists."""
        return (self.root / "last.json").is_file()

    def best_info(self) -> dict[str, Any] | None:
        """The ``best.json`` pointer, if any."""
        file = self.root / "best.json"
        return read_json(file) if file.is_file() else None

    def load(
        self,
        which: Literal["best", "last"],
        *,
        model: nn.Module,
        objective: nn.Module | None,
        optimizer: torch.optim.Optimizer | None,
        load_weights: Callable[[nn.Module, Path], object] | None = None,
    ) -> tuple[dict[str, Any], tuple[dict[str, Any], dict[str, torch.Tensor]] | None]:
        """Load weights (and optimizer state) into the given objects.

        ``load_weights(module, file)`` replaces :func:`load_model_weights` (FSDP loads into shards).

        Returns ``(state_json, rng_of_this_rank)`` (``None`` when this rank has no RNG file, e.g.
        a different number of processes); the caller restores counters, scheduler, sampler and RNG.
        """
        directory = resolve_checkpoint(self.root, which)
        payload = verify_checkpoint(directory)
        load = load_weights or load_model_weights
        load(model, directory / "model.safetensors")
        if payload.get("has_objective_state"):
            if objective is None:
                raise CheckpointError(f"{directory} holds objective state but no objective was given")
            load(objective, directory / "objective.safetensors")
        if optimizer is not None:
            if payload["optimizer"].get("sharded"):
                shard = directory / f"optimizer.rank{self.rank}.safetensors"
                if not shard.is_file():
                    raise CheckpointError(f"{shard} not found: an FSDP checkpoint resumes with the same number of "
                                          "processes")
                with st.safe_open(str(shard), framework="pt") as handle:
                    meta = handle.metadata() or {}
                    tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
                load_optimizer_state(optimizer, json.loads(meta["optimizer_json"]), tensors)
            else:
                optimizer_file = directory / "optimizer.safetensors"
                try:
                    tensors = st.load_file(str(optimizer_file))
                except Exception as exc:  # SafetensorError
                    raise CheckpointError(f"{optimizer_file}: corrupt safetensors file ({exc})") from None
                load_optimizer_state(optimizer, payload["optimizer"], tensors)
        rng_file = directory / f"rng.rank{self.rank}.safetensors"
        rng: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
        if rng_file.is_file():
            try:
                with st.safe_open(str(rng_file), framework="pt") as handle:
                    meta = handle.metadata() or {}
                    tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
                rng = (json.loads(meta["rng_json"]), tensors)
            except Exception as exc:  # SafetensorError, missing/corrupt metadata
                raise CheckpointError(f"{rng_file}: corrupt RNG state ({type(exc).__name__}: {exc})") from None
        payload["_path"] = str(directory)
        return payload, rng


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
