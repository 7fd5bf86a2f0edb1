"""Local loss over features gathered with gradient on 2 gloo ranks == single-process global loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from medvl.objectives import GradientProbe, clip_loss, nt_xent_loss, siglip_loss, unicl_loss
from medvl.objectives.distributed import gather_rows

pytestmark = pytest.mark.distributed

WORLD = 2
SIZES = (3, 2)  # unequal per-rank batches (a last partial batch) exercise the padding path
N = sum(SIZES)


def _global_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {
        "image": torch.randn(N, 4, generator=g, dtype=torch.float64),
        "text": torch.randn(N, 4, generator=g, dtype=torch.float64),
        "labels": torch.tensor([0, 1, 0, 2, 1]),
        "x": torch.randn(N, 5, generator=g, dtype=torch.float64),
        "t": torch.randn(N, 6, generator=g, dtype=torch.float64),
    }


def _losses(
    image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> dict[str, torch.Tensor]:
    return {
        "clip": clip_loss(image, text, scale),
        "siglip": siglip_loss(image, text, scale, -2.0),
        "unicl": unicl_loss(image, text, scale, labels, labels),
        "nt_xent": nt_xent_loss(image, text, scale),
    }


def _model() -> nn.Module:
    torch.manual_seed(5)
    return nn.ModuleDict({"img": nn.Linear(5, 3), "txt": nn.Linear(6, 3)}).double()


def _worker(rank: int, store: str, out_dir: str) -> None:
    # a file rendezvous: no TCP port to race for with other test processes on the machine
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        data = _global_data()
        start = sum(SIZES[:rank])
        shard = slice(start, start + SIZES[rank])
        result: dict[str, torch.Tensor] = {}
        # 1. loss values and feature gradients of every distributed-aware loss
        for name in ("clip", "siglip", "unicl", "nt_xent"):
            image = data["image"][shard].clone().requires_grad_(True)
            text = data["text"][shard].clone().requires_grad_(True)
            scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
            loss = _losses(image, text, data["labels"][shard], scale)[name]
            loss.backward()
            result[f"{name}.loss"] = loss.detach()
            result[f"{name}.image_grad"] = image.grad
            result[f"{name}.text_grad"] = text.grad
            result[f"{name}.scale_grad"] = scale.grad
        # 2. a DDP-wrapped model: averaged parameter gradients == global-batch gradients
        model = nn.parallel.DistributedDataParallel(_Both(_model()))
        loss = clip_loss(*model(data["x"][shard], data["t"][shard]), 3.0)
        # the gradient probe (autograd.grad, no .grad writes) must not disturb DDP's reducer
        report = GradientProbe(1, scope="all").measure({"clip": loss}, model.module)
        result["probe_norm"] = torch.tensor(report["clip"])
        loss.backward()
        for pname, param in model.module.inner.named_parameters():
            result[f"ddp.{pname}"] = param.grad
        # 3. gathered labels keep rank order
        (all_labels,) = gather_rows(data["labels"][shard]).tensors
        result["labels"] = all_labels
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


class _Both(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner["img"](x), self.inner["txt"](t)


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    out_dir = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(str(out_dir / "rendezvous"), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", ["clip", "siglip", "unicl", "nt_xent"])
def test_local_loss_equals_global_loss_and_gradients(
    rank_results: list[dict[str, torch.Tensor]], name: str
) -> None:
    data = _global_data()
    image = data["image"].clone().requires_grad_(True)
    text = data["text"].clone().requires_grad_(True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    ref = _losses(image, text, data["labels"], scale)[name]
    ref.backward()
    # the mean over ranks of the per-rank values is the global-batch loss
    torch.testing.assert_close(sum(r[f"{name}.loss"] for r in rank_results) / WORLD, ref.detach())
    # each rank's feature gradient is the sum over ranks' losses; DDP's 1/world averaging gives the global one
    start = 0
    for rank, n in enumerate(SIZES):
        rows = slice(start, start + n)
        torch.testing.assert_close(rank_results[rank][f"{name}.image_grad"] / WORLD, image.grad[rows])
        torch.testing.assert_close(rank_results[rank][f"{name}.text_grad"] / WORLD, text.grad[rows])
        start += n
    torch.testing.assert_close(sum(r[f"{name}.scale_grad"] for r in rank_results) / WORLD, scale.grad)


def test_ddp_parameter_gradients_equal_global_batch(rank_results: list[dict[str, torch.Tensor]]) -> None:
    data = _global_data()
    model = _Both(_model())
    clip_loss(*model(data["x"], data["t"]), 3.0).backward()
    for pname, param in model.inner.named_parameters():
        for rank in range(WORLD):
            torch.testing.assert_close(rank_results[rank][f"ddp.{pname}"], param.grad)
    # the probe reports each rank's local (not averaged) gradient norm
    assert all(float(r["probe_norm"]) > 0 for r in rank_results)


def test_gathered_labels_keep_rank_order(rank_results: list[dict[str, torch.Tensor]]) -> None:
    for r in rank_results:
        assert r["labels"].tolist() == _global_data()["labels"].tolist()
