"""The trainer's per-step check rides on DDP's gradient all-reduce (2 gloo processes).

``PayloadAllReduce`` must leave the gradients bit-identical to DDP without a hook and return the
payload summed over processes; the trainer must then issue no collective of its own per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from _training_tiny import TinyDataset, TinyDual, TinyObjective, collate, tiny_config
from lightning_fabric import Fabric
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from medvl.training import Callback, Trainer
from medvl.training.grad_sync import PayloadAllReduce

pytestmark = pytest.mark.distributed


def _net() -> nn.Module:
    torch.manual_seed(0)  # same weights on every process
    return nn.Sequential(nn.Linear(7, 33), nn.Tanh(), nn.Linear(33, 5))


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def _hook_vs_default(fabric: Fabric) -> dict[str, Any]:
    rank = fabric.global_rank
    x = torch.randn(9, 7, generator=torch.Generator().manual_seed(10 + rank))  # different data per process
    plain = DistributedDataParallel(_net(), bucket_cap_mb=0.001)  # several buckets
    plain(x).pow(2).sum().backward()
    hooked_net = _net()
    hooked = DistributedDataParallel(hooked_net, bucket_cap_mb=0.001)
    state = PayloadAllReduce()
    hooked.register_comm_hook(state, PayloadAllReduce.hook)
    payload = torch.tensor([float(rank), 0.1 * (rank + 1), 2.0**20 + rank], dtype=torch.float64)
    state.attach(payload)
    hooked(x).pow(2).sum().backward()
    summed = state.take()
    identical = all(torch.equal(a, b) for a, b in zip(_grads(plain.module), _grads(hooked_net), strict=True))
    # a backward that synchronises nothing carries nothing: the caller is told
    state.attach(payload)
    with hooked.no_sync():
        hooked(x).sum().backward()
    unsent = state.take()
    return {"identical": identical, "n_grads": len(_grads(hooked_net)),
            "summed": None if summed is None else summed.tolist(), "dtype": str(summed.dtype) if summed is not None else "",
            "unsent": unsent is None, "world": dist.get_world_size()}


def test_payload_rides_on_the_gradients_without_changing_them() -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_fork", precision="32-true")
    out = fabric.launch(_hook_vs_default)
    assert out["world"] == 2 and out["n_grads"] == 4
    assert out["identical"], "gradients differ from DDP's default reduction"
    assert out["summed"] == pytest.approx([1.0, 0.3, 2.0**21 + 1], rel=1e-7) and out["dtype"] == "torch.float64"
    assert out["unsent"]


class _CountCollectives(Callback):
    """Sizes of all-reduced tensors smaller than any gradient bucket, from the second optimizer step on."""

    def __init__(self) -> None:
        self.small: list[int] = []
        self._original = dist.all_reduce

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        if record["step"] == 1:  # from the second step on, count
            count = self.small

            def counting(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
                if tensor.numel() < 16:
                    count.append(tensor.numel())
                return self._original(tensor, *args, **kwargs)

            dist.all_reduce = counting  # type: ignore[assignment]

    def restore(self) -> None:
        dist.all_reduce = self._original


def _fit_counting(fabric: Fabric, out: Path) -> dict[str, Any]:
    cfg = tiny_config(epochs=1, batch_size=2, strategy="ddp_fork", devices=2, validate_at_start=False)
    torch.manual_seed(1)
    counter = _CountCollectives()
    try:
        trainer = Trainer(cfg, out, seed=0, fabric=fabric, callbacks=[counter])
        result = trainer.fit(TinyDual(dropout=0.0), TinyObjective(), TinyDataset(16), collate_fn=collate)
    finally:
        counter.restore()
    return {"steps": result.global_step, "small": counter.small, "hooked": trainer.finite_check.grad_payload is not None}


def test_trainer_adds_no_collective_per_step(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_fork", precision="32-true")
    out = fabric.launch(_fit_counting, tmp_path / "run")
    assert out["hooked"] and out["steps"] == 4  # 16 records / (2 processes × 2)
    assert out["small"] == [], "the non-finite check / train logs sent their own all-reduce during training steps"
