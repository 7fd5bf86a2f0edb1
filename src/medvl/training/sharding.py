"""Fully sharded data parallel (``training.strategy: fsdp``): PyTorch's FSDP2 through Lightning Fabric.

Parameters, gradients and optimizer state are sharded over the processes (``fully_shard`` on every
submodule that owns at least ``training.fsdp.min_params`` parameters, deepest first, then on the
whole task), so a tower that does not fit one device's memory with DDP trains. It runs wherever
``torch.distributed`` does, CPUs with gloo included (Fabric's own FSDP1 strategy is GPU-only).

What changes for the trainer: the optimizer is built after sharding; checkpoints hold the full
model weights (gathered, written by process 0, loadable anywhere) and one optimizer shard per
process (``optimizer.rank<r>.safetensors``: resume needs the same number of processes, as it
always does); weights are loaded into the shards from full tensors; validation runs the same
number of forward passes on every process (each forward gathers parameters), and the evaluation
metrics are computed by every process on the whole split. Training equals DDP on the same model
(tested on 2 gloo processes).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
from torch import nn

from medvl.config.training import TrainConfig

__all__ = ["average_replicated_gradients", "build_fsdp_strategy", "full_state_dict", "is_sharded",
           "load_full_state_dict", "replicated_parameters", "shard_module"]


def shard_module(module: nn.Module, device_mesh: Any, *, min_params: int) -> nn.Module:
    """``fully_shard`` every submodule owning ``min_params`` parameters (not counting sharded children), then the root."""
    from torch.distributed.fsdp import fully_shard

    mesh = device_mesh["data_parallel"] if device_mesh.mesh_dim_names else device_mesh
    scalars = set(replicated_parameters(module))  # FSDP2 cannot shard 0-d tensors: kept whole on every process
    covered: set[int] = {id(p) for p in scalars}

    def visit(child: nn.Module, inside_attention: bool = False) -> None:
        for grandchild in child.children():
            visit(grandchild, inside_attention or isinstance(child, nn.MultiheadAttention))
        # containers (ModuleList) are never called; MultiheadAttention reads its out_proj's weight directly
        if child is module or inside_attention or type(child).forward is nn.Module.forward:
            return
        own = [p for p in child.parameters() if id(p) not in covered]
        if own and sum(p.numel() for p in own) >= min_params:
            fully_shard(child, mesh=mesh, ignored_params=scalars)
            covered.update(id(p) for p in own)

    visit(module)
    fully_shard(module, mesh=mesh, ignored_params=scalars)
    return module


def replicated_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters FSDP leaves whole on every process (0-d ones, e.g. the logit scale); their
    gradients are averaged by :func:`average_replicated_gradients`."""
    return [p for p in module.parameters() if p.ndim == 0]


def average_replicated_gradients(params: list[nn.Parameter], all_reduce: Any) -> None:
    """Average the gradients of the replicated parameters over processes (what DDP would do for them)."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return
    stacked = torch.stack([p.grad.reshape(()) for p in with_grad])  # type: ignore[union-attr]
    mean = all_reduce(stacked, reduce_op="mean")
    for p, value in zip(with_grad, mean, strict=True):
        p.grad.copy_(value.reshape(p.grad.shape))  # type: ignore[union-attr]


def build_fsdp_strategy(cfg: TrainConfig, timeout: timedelta) -> Any:
    """Fabric's ``ModelParallelStrategy`` with data parallelism only (FSDP2), carrying the collective timeout."""
    from functools import partial

    from lightning_fabric.strategies import ModelParallelStrategy

    if not isinstance(cfg.devices, int) or cfg.devices < 1:
        from medvl.config.loading import ConfigError

        raise ConfigError(f"training.strategy=fsdp needs training.devices as a number of devices per node, "
                          f"got {cfg.devices!r}")
    return ModelParallelStrategy(parallelize_fn=partial(_parallelize, min_params=cfg.fsdp.min_params),
                                 data_parallel_size=cfg.devices * cfg.num_nodes, tensor_parallel_size=1,
                                 timeout=timeout)


def _parallelize(module: nn.Module, device_mesh: Any, *, min_params: int) -> nn.Module:
    return shard_module(module, device_mesh, min_params=min_params)


def is_sharded(fabric: Any) -> bool:
    """Whether ``fabric`` shards parameters (FSDP)."""
    from lightning_fabric.strategies import ModelParallelStrategy

    return isinstance(getattr(fabric, "strategy", None), ModelParallelStrategy)


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's full (unsharded) state on the CPU; a collective: every process must call it."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, value in module.state_dict().items():
        tensor = value.full_tensor() if isinstance(value, DTensor) else value
        out[name] = tensor.detach().contiguous().cpu().clone()
    return out


@torch.no_grad()
def load_full_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into a (possibly sharded) module: each process keeps its own shard (no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    current = module.state_dict(keep_vars=True)
    missing = sorted(set(current) - set(state))
    unexpected = sorted(set(state) - set(current))
    if missing or unexpected:
        raise ValueError(f"weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, target in current.items():
        source = state[name]
        if isinstance(target, DTensor):
            shard = distribute_tensor(source.to(target.dtype), target.device_mesh, target.placements, src_data_rank=None)
            target.to_local().copy_(shard.to_local())
        else:
            target.copy_(source.to(target.dtype))
