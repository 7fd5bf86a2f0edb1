"""Multi-process correctness with 2 gloo processes on CPU (the issue's acceptance tests).

* validation on 17 records × 2 processes × batch 8 finishes and equals one process's loss and
  metrics to 1e-6 (processes get 2 and 1 validation batches; nothing waits on anything);
* ``train/*`` step logs are global means (equal to one process on the same global batch);
* a collective that never completes stops every process with an error naming it and the step;
* a non-finite loss on one process stops every process at the same step, before any update.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _training_data import run_config_dict, train_tokenizer_file, write_tiny_dataset
from _training_tiny import TinyDataset, TinyDual, TinyObjective, collate, tiny_config
from lightning_fabric import Fabric

from medvl.config.loading import config_from_dict
from medvl.config.training import RunConfig
from medvl.evaluation.validation import build_validation_hooks
from medvl.training import Callback, NonFiniteLossError, Trainer
from medvl.training.distributed import CollectiveError
from medvl.training.fabric_setup import build_fabric
from medvl.training.run import run_training

pytestmark = pytest.mark.distributed


def _epochs(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "logs" / "epochs.jsonl").read_text().splitlines()]


def _steps(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "logs" / "steps.jsonl").read_text().splitlines()]


def test_validation_17_records_two_processes_equals_one_process(tmp_path: Path) -> None:
    manifest = write_tiny_dataset(tmp_path / "data", n=102)  # 68 train, 17 val, 17 test
    tokenizer = train_tokenizer_file(manifest)
    training = {"epochs": 1, "batch_size": 8, "logging": {"every_n_steps": 1, "progress_bar": False}}
    config = run_config_dict(manifest, tokenizer, **training)
    # a LayerNorm tower: BatchNorm statistics are per process under DDP, so a CNN would differ by design
    config["model"]["vision"] = {"kind": "tiny_vit", "image_size": 16, "patch_size": 8, "in_channels": 1,
                                 "width": 16, "depth": 1, "heads": 2}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))

    # two processes started by Fabric's launcher, exactly as a user runs it (timeout: a hang fails the test)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "medvl.cli.main", "train", str(tmp_path / "run.yaml"), "--out",
               str(tmp_path / "ddp"), "--set", "training.devices=2", "--set", "training.strategy=ddp",
               "--set", "training.collective_timeout_s=120"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = _epochs(tmp_path / "ddp")
    assert [r["epoch"] for r in ddp] == [0, 1]

    single = config_from_dict(config, RunConfig)
    run_training(single, tmp_path / "single", hook_factory=build_validation_hooks)
    one = _epochs(tmp_path / "single")
    # epoch 0 (identical weights): the CLIP validation loss over batches 8 + 8 + 1 and every metric
    names = sorted(k for k in one[0] if k.startswith("val/"))
    assert "val/loss" in names and "val/clip" in names and "val/retrieval/i2t/recall@1" in names
    assert any(k.startswith("val/classification/") for k in names)
    assert sorted(k for k in ddp[0] if k.startswith("val/")) == names
    for name in names:
        assert ddp[0][name] == pytest.approx(one[0][name], rel=1e-6, abs=1e-6), name

    # train/* logs are global means: step 1 of 2 × 8 equals one process's step 1 on the same 16 records
    global_batch = config_from_dict({**config, "training": {**config["training"], "batch_size": 16}}, RunConfig)
    run_training(global_batch, tmp_path / "single16", hook_factory=build_validation_hooks)
    first_ddp, first_one = _steps(tmp_path / "ddp")[0], _steps(tmp_path / "single16")[0]
    for name in ("train/loss", "train/clip", "train/bce"):
        assert first_ddp[name] == pytest.approx(first_one[name], rel=1e-5), name
    assert _steps(tmp_path / "ddp")[0]["step"] == 1


class _Stall(Callback):
    """Process 1 stops taking part after optimizer step 1 (a hung or stuck process)."""

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        if trainer.rank == 1 and record["step"] == 1:
            time.sleep(6)


STALL_CONFIG = {"epochs": 1, "batch_size": 4, "strategy": "ddp_fork", "devices": 2, "collective_timeout_s": 1.5}


def _stalled_fit(fabric: Fabric, out: Path) -> None:
    cfg = tiny_config(**STALL_CONFIG)
    torch.manual_seed(1)
    try:
        Trainer(cfg, out, seed=0, fabric=fabric, callbacks=[_Stall()]).fit(
            TinyDual(dropout=0.0), TinyObjective(), TinyDataset(32), TinyDataset(6, seed=1), collate_fn=collate)
        outcome = {"error": None}
    except Exception as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc),
                   "fields": [getattr(exc, "rank", None), getattr(exc, "phase", None), getattr(exc, "step", None)]}
    (out / f"rank{fabric.global_rank}.json").write_text(json.dumps(outcome))


def test_a_stalled_collective_stops_with_an_error_naming_process_and_step(tmp_path: Path) -> None:
    fabric = build_fabric(tiny_config(**STALL_CONFIG), launch=False)  # carries the collective timeout
    started = time.monotonic()
    fabric.launch(_stalled_fit, tmp_path)
    assert time.monotonic() - started < 60
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    assert rank0["error"] == CollectiveError.__name__
    assert rank0["fields"] == [0, "a training step", 2]
    assert "process 0 of 2" in rank0["message"] and "optimizer step 2" in rank0["message"]
    assert "collective_timeout_s=1.5" in rank0["message"]
    rank1 = json.loads((tmp_path / "rank1.json").read_text())  # the stalled one fails too, naming itself
    assert rank1["error"] == CollectiveError.__name__ and "process 1 of 2" in rank1["message"]


NAN_CONFIG = {"epochs": 1, "batch_size": 4, "strategy": "ddp_fork", "devices": 2, "collective_timeout_s": 60,
              "validate_at_start": False, "checkpoint": {"every_n_steps": 1}}


def _fit_poisoned_on_rank_1(fabric: Fabric, out: Path) -> None:
    torch.manual_seed(1)
    model = TinyDual(dropout=0.0)
    if fabric.global_rank == 1:
        model.poison_at_call = 3  # optimizer step 3: NaN on process 1 only
    try:
        Trainer(tiny_config(**NAN_CONFIG), out, seed=0, fabric=fabric).fit(
            model, TinyObjective(), TinyDataset(32), collate_fn=collate)
        outcome: dict[str, Any] = {"error": None}
    except NonFiniteLossError as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc), "step": exc.step}
    outcome["finite"] = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    outcome["weights"] = [p.detach().flatten().tolist() for p in model.parameters()]
    (out / f"rank{fabric.global_rank}.json").write_text(json.dumps(outcome))


def test_a_non_finite_loss_on_one_process_stops_every_process_at_that_step(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from medvl.training import resolve_checkpoint

    fabric = build_fabric(tiny_config(**NAN_CONFIG), launch=False)
    fabric.launch(_fit_poisoned_on_rank_1, tmp_path)  # a process left waiting would hit the 60 s timeout
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for outcome in ranks:
        assert outcome["error"] == NonFiniteLossError.__name__, outcome
        assert outcome["step"] == 3 and "optimizer step 3" in outcome["message"]
        assert outcome["finite"]  # no update applied with the NaN gradients
    assert "total=nan" in ranks[1]["message"]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    last = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert last["global_step"] == 2
    saved = load_file(str(resolve_checkpoint(tmp_path, "last") / "model.safetensors"))
    assert all(bool(torch.isfinite(t).all()) for t in saved.values())
    result = json.loads((tmp_path / "training_result.json").read_text())
    assert result["status"] == "non_finite_loss" and "step 3" in result["message"]


def test_fsdp_on_two_processes_equals_ddp(tmp_path: Path) -> None:
    """FSDP2 (parameters, gradients and optimizer state sharded) trains the same model as DDP."""
    from safetensors.torch import load_file

    from medvl.training import resolve_checkpoint

    manifest = write_tiny_dataset(tmp_path / "data", n=60)  # 40 train, 10 val (5 + 5 over 2 processes), 10 test
    config = run_config_dict(manifest, train_tokenizer_file(manifest), epochs=1, batch_size=8,
                             logging={"every_n_steps": 1, "progress_bar": False})
    config["model"]["vision"] = {"kind": "tiny_vit", "image_size": 16, "patch_size": 8, "in_channels": 1,
                                 "width": 16, "depth": 1, "heads": 2}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for strategy in ("ddp", "fsdp"):
        command = [sys.executable, "-m", "medvl.cli.main", "train", str(tmp_path / "run.yaml"), "--out",
                   str(tmp_path / strategy), "--set", "training.devices=2", "--set", f"training.strategy={strategy}",
                   "--set", "training.fsdp.min_params=64", "--set", "training.collective_timeout_s=120"]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, strategy + done.stdout[-3000:] + done.stderr[-3000:]
    ddp = load_file(str(resolve_checkpoint(tmp_path / "ddp", "last") / "model.safetensors"))
    fsdp = load_file(str(resolve_checkpoint(tmp_path / "fsdp", "last") / "model.safetensors"))
    assert ddp.keys() == fsdp.keys()  # full weights, gathered: loadable without FSDP
    for name, value in ddp.items():
        other = fsdp[name]
        if name.endswith("attn.in_proj_bias"):
            # the key bias has an exactly zero gradient (softmax ignores a constant added to every key), so
            # AdamW turns reduction-order noise (~1e-9) into ±lr steps there: compare the query and value parts
            width = value.shape[0] // 3
            value, other = torch.cat([value[:width], value[2 * width:]]), torch.cat([other[:width], other[2 * width:]])
        torch.testing.assert_close(other, value, rtol=1e-5, atol=1e-6, msg=name)
    assert [r["train/loss"] for r in _steps(tmp_path / "fsdp")] == pytest.approx(
        [r["train/loss"] for r in _steps(tmp_path / "ddp")], rel=1e-6)
    assert list((resolve_checkpoint(tmp_path / "fsdp", "last")).glob("optimizer.rank*.safetensors"))
    for a, b in zip(_epochs(tmp_path / "ddp"), _epochs(tmp_path / "fsdp"), strict=True):
        assert a["val/loss"] == pytest.approx(b["val/loss"], rel=1e-5)
        assert a["val/retrieval/i2t/recall@1"] == b["val/retrieval/i2t/recall@1"]
