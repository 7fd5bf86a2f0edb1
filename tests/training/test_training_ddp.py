"""Two gloo processes on CPU train like one process with the global batch (per-sample loss)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _training_tiny import TinyDataset, TinyDual, TinyObjective, collate, tiny_config
from lightning_fabric import Fabric

from medvl.training import Trainer


def _ddp_fit(fabric: Fabric, out: Path) -> dict[str, Any]:
    cfg = tiny_config(epochs=1, batch_size=4, strategy="ddp_fork", devices=2, checkpoint={"every_n_steps": 1})
    torch.manual_seed(1)
    model = TinyDual(dropout=0.0)
    result = Trainer(cfg, out, seed=0, fabric=fabric).fit(
        model, TinyObjective(w_clip=0.0, w_ce=1.0), TinyDataset(16), TinyDataset(6, seed=1), collate_fn=collate)
    gathered = fabric.all_gather(model.vision[0].weight.detach())
    # numpy, not tensors: tensors would travel through shared memory that dies with the child process
    return {"state": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
            "ranks_agree": bool(torch.equal(gathered[0], gathered[1])), "steps": result.global_step,
            "world_size": fabric.world_size}


@pytest.mark.distributed
def test_two_process_ddp_equals_single_process_global_batch(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp_fork", precision="32-true")
    ddp = fabric.launch(_ddp_fit, tmp_path / "ddp")  # forked processes, gloo; returns rank 0's result
    assert ddp["world_size"] == 2 and ddp["ranks_agree"] and ddp["steps"] == 2  # 16 records / (2 × 4)

    torch.manual_seed(1)
    model = TinyDual(dropout=0.0)
    Trainer(tiny_config(epochs=1, batch_size=8), tmp_path / "single", seed=0).fit(
        model, TinyObjective(w_clip=0.0, w_ce=1.0), TinyDataset(16), TinyDataset(6, seed=1), collate_fn=collate)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(ddp["state"][name]), value, rtol=1e-5, atol=1e-6, msg=name)
    # the validation loss is reduced over both processes: equal to one process over all 6 records
    read = lambda run: [json.loads(x) for x in (tmp_path / run / "logs" / "epochs.jsonl").read_text().splitlines()]  # noqa: E731
    assert read("ddp")[0]["val/loss"] == pytest.approx(read("single")[0]["val/loss"], rel=1e-6)
    assert read("ddp")[1]["val/loss"] == pytest.approx(read("single")[1]["val/loss"], rel=1e-5)
    assert (tmp_path / "ddp" / "checkpoints" / "last.json").is_file()
