"""Multi-process training helpers: the strategy Fabric gets, and failures of collectives.

Every collective (DDP's gradient all-reduce, the loss's all-gather, the trainer's reductions,
checkpoint barriers) is bounded by ``training.collective_timeout_s``. When a process hangs or dies,
the others stop after that time with a :class:`CollectiveError` that names the process, the phase
(training step, validation, checkpoint), the epoch and the optimizer step, instead of waiting
until the job's wall time. (With NCCL, PyTorch's watchdog aborts the process after the same timeout.)
"""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from typing import Any

import torch

from medvl.config.training import TrainConfig

__all__ = ["CollectiveError", "build_strategy", "collective_error", "is_multi_process"]

_COLLECTIVE_FAILURE = re.compile(
    r"timed out|timeout|connection (closed|reset|refused)|broken pipe|gloo|nccl|socket|peer|"
    r"process group|ProcessGroup|store", re.IGNORECASE)


class CollectiveError(RuntimeError):
    """A collective operation between training processes failed or timed out."""

    def __init__(self, message: str, *, rank: int, phase: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.phase = phase
        self.epoch = epoch
        self.step = step


def is_multi_process(cfg: TrainConfig) -> bool:
    """Whether this run will have more than one process (devices, nodes, torchrun or SLURM tasks)."""
    if isinstance(cfg.devices, int) and cfg.devices not in (0, 1):
        return True
    if isinstance(cfg.devices, str) and cfg.devices not in ("1", "auto"):
        return True
    if cfg.num_nodes > 1:
        return True
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        value = os.environ.get(name, "1")
        if value.isdigit() and int(value) > 1:
            return True
    return False


def build_strategy(cfg: TrainConfig) -> Any:
    """Fabric's strategy for ``cfg``: a DDP (or FSDP) strategy carrying the collective timeout."""
    from lightning_fabric.strategies import DDPStrategy

    timeout = timedelta(seconds=cfg.collective_timeout_s)
    name = cfg.strategy
    if name == "auto":
        if not is_multi_process(cfg):
            return "auto"
        name = "ddp"
    if name == "fsdp":
        from medvl.training.sharding import build_fsdp_strategy

        return build_fsdp_strategy(cfg, timeout)
    start_method: Any = {"ddp_spawn": "spawn", "ddp_fork": "fork"}.get(name, "popen")
    return DDPStrategy(start_method=start_method, timeout=timeout,
                       find_unused_parameters=name == "ddp_find_unused_parameters_true")


def collective_error(exc: BaseException, *, rank: int, world: int, phase: str, epoch: int, step: int,
                     timeout_s: float) -> CollectiveError | None:
    """A :class:`CollectiveError` for ``exc`` when it is a failed/timed-out collective, else ``None``."""
    dist_error = getattr(torch.distributed, "DistError", ())
    if not isinstance(exc, RuntimeError) or isinstance(exc, CollectiveError):
        return None
    if not (isinstance(exc, dist_error) or _COLLECTIVE_FAILURE.search(str(exc))):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = (
        f"process {rank} of {world} (host {socket.gethostname()}): a collective operation failed or did not "
        f"complete within training.collective_timeout_s={timeout_s:g} s during {phase} at epoch {epoch}, "
        f"optimizer step {step}. Another process has probably died, hung or taken a different path (see its "
        f"log). Cause: {first}"
    )
    return CollectiveError(message, rank=rank, phase=phase, epoch=epoch, step=step)
