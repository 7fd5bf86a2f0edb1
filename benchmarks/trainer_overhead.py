"""Per-step overhead of ``medvl.training.Trainer`` against a bare PyTorch loop.

Both train the same medvl ``DualEncoder`` (tiny ViT + tiny text transformer, CLIP + BCE
composite objective, λ = 0.5) on the same in-memory data in the same order (the trainer's
seeded sampler), with the same AdamW parameter groups and cosine schedule, one process, the
same thread count. The bare loop is ``forward → objective → backward → step → schedule →
zero_grad → clamp``. The trainer adds Fabric wrapping, the non-finite check, per-step records,
JSONL logs every ``--log-every`` steps, callbacks and the progress bar (on, as by default).

Reported: CPU seconds per step (process time, robust to other load on the machine; mean of the intervals between consecutive optimizer steps inside an
epoch, so the epoch-end checkpoint and validation are excluded), the ratio trainer / bare
(target ≤ 1.05), the ratio of whole-run time (the trainer's setup, epoch-end checkpoints,
logs and result file included), and the largest per-step loss difference (0: the two loops compute the same thing).
Each repeat runs both loops, alternating which goes first; the median ratio is reported.

    .venv/bin/python -m benchmarks.trainer_overhead                  # ~1-2 min here
    .venv/bin/python -m benchmarks.trainer_overhead --records 2048 --batch 64 --image-size 64 --repeats 5
    .venv/bin/python -m benchmarks.trainer_overhead --processes 2    # the multi-process path (gloo)

``--processes N`` runs both loops in N processes with DDP over gloo (one CPU thread each): the
bare loop is ``DistributedDataParallel`` over the same task, each process on its shard of the
same seeded sampler, the CLIP term gathering features across processes as the trainer's does;
the trainer is ``Trainer.fit`` with a Lightning Fabric DDP strategy on the same process group.
Rank 0 reports wall-clock seconds per step (collectives wait, so CPU time would hide them) and
CPU seconds per step, per-step and whole-run ratios, and the largest loss difference (the
trainer logs global means, summed on DDP's float32 gradient all-reduce, so ≈1e-7; the bare loop's
per-process losses are averaged in float64 after the timing).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medvl.config.loading import config_from_dict
from medvl.config.model import ModelConfig
from medvl.config.objective import ObjectiveConfig
from medvl.config.training import TrainConfig
from medvl.models import DualEncoder, build_model
from medvl.objectives import build_objective
from medvl.training import Callback, Trainer
from medvl.training.optim import build_optimizer, build_scheduler
from medvl.training.sampler import ResumableSampler
from medvl.training.task import TrainTask
from medvl.utils.seeding import seed_everything

WORDS = ["left", "right", "bilateral", "small", "moderate", "large", "pleural", "effusion", "consolidation", "opacity", "atelectasis", "cardiomegaly", "edema", "pneumothorax", "nodule", "mass", "fracture", "normal", "stable", "unchanged", "improved", "lobe", "upper", "lower", "basal", "apical", "heart", "lungs", "clear", "no", "acute", "process", "catheter", "tube", "line"]
N_CLASSES = 10
#: CPU time of this process: the machine may be shared, and both loops run in this one process
#: (no DataLoader workers), so CPU time is a far steadier measure than wall time here.
CLOCK = time.process_time


class MemoryImageText(Dataset[dict[str, Any]]):
    """Random images, word-salad captions and multilabel targets held in memory (no I/O noise)."""

    def __init__(self, n: int, image_size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, image_size, image_size, generator=g)
        self.labels = (torch.rand(n, N_CLASSES, generator=g) < 0.2).float()
        self.texts = []
        for i in range(n):
            idx = torch.randint(0, len(WORDS), (int(torch.randint(6, 24, (1,), generator=g)),), generator=g)
            self.texts.append(f"study {i}: " + " ".join(WORDS[j] for j in idx.tolist()))

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"id": str(i), "index": i, "pixel_values": self.images[i], "text": self.texts[i],
                "labels": {"findings": self.labels[i]}}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The DESIGN.md batch: ids, index, pixel_values, texts, labels."""
    return {
        "ids": [it["id"] for it in items],
        "index": torch.tensor([it["index"] for it in items]),
        "pixel_values": torch.stack([it["pixel_values"] for it in items]),
        "texts": [it["text"] for it in items],
        "labels": {"findings": torch.stack([it["labels"]["findings"] for it in items])},
    }


def build_dual_encoder(image_size: int, text: dict[str, Any] | None = None) -> DualEncoder:
    """Tiny ViT + (by default) tiny text transformer with a multilabel head."""
    data = {
        "embed_dim": 64,
        "vision": {"kind": "tiny_vit", "image_size": image_size, "patch_size": 8, "width": 64, "depth": 2,
                   "heads": 4},
        "text": text or {"kind": "tiny_text", "vocab_size": 512, "max_length": 32, "width": 64, "depth": 2,
                         "heads": 4},
        "classifiers": {"findings": {"kind": "multilabel", "num_classes": N_CLASSES}},
    }
    return build_model(config_from_dict(data, ModelConfig))


def objective_config() -> ObjectiveConfig:
    return ObjectiveConfig.model_validate({
        "balance": 0.5,
        "terms": [{"name": "clip", "kind": "clip"}, {"name": "bce", "kind": "bce", "options": {"task": "findings"}}],
    })


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig.model_validate({
        "epochs": args.epochs, "batch_size": args.batch, "accelerator": "cpu", "devices": 1,
        "validate_at_start": False, "optimizer": {"lr": 1e-3},
        "schedule": {"kind": "cosine", "warmup_steps": 2},
        "logging": {"every_n_steps": args.log_every, "progress_bar": True},
    })


class StepClock(Callback):
    """Timestamps of every optimizer step end, per epoch (``clock``: CPU time by default)."""

    def __init__(self, clock: Any = CLOCK) -> None:
        self.clock = clock
        self.times: dict[int, list[float]] = {}
        self.losses: list[float] = []

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        self.times.setdefault(int(record["epoch"]), []).append(self.clock())
        self.losses.append(float(record["train/loss"]))


def per_step(times: dict[int, list[float]]) -> float:
    """Mean interval between consecutive step ends inside each epoch."""
    gaps = [b - a for stamps in times.values() for a, b in itertools.pairwise(stamps)]
    return sum(gaps) / len(gaps)


def run_bare(model: DualEncoder, data: MemoryImageText, cfg: TrainConfig, seed: int) -> tuple[StepClock, float]:
    """The bare loop; returns the step clock and the time of all epochs."""
    objective = build_objective(objective_config())
    task = TrainTask(model, objective)
    optimizer, _ = build_optimizer(task, cfg.optimizer)
    steps_per_epoch = -(-len(data) // cfg.batch_size)
    scheduler, _ = build_scheduler(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs)
    seed_everything(seed)
    sampler = ResumableSampler(len(data), seed=seed)
    clock = StepClock()
    start = CLOCK()
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                            generator=torch.Generator().manual_seed(seed))
        for batch in loader:
            outputs = model(batch)
            losses = objective(outputs, batch)
            losses["total"].backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            model.clamp_()
            clock.times.setdefault(epoch, []).append(CLOCK())
            clock.losses.append(float(losses["total"].detach()))
    return clock, CLOCK() - start


def run_trainer(model: DualEncoder, data: MemoryImageText, cfg: TrainConfig, seed: int) -> tuple[StepClock, float]:
    """``Trainer.fit``; returns the step clock and the time of the whole fit (setup,
    epoch-end checkpoints, logs and result file included)."""
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        start = CLOCK()
        trainer = Trainer(cfg, Path(tmp), seed=seed, validation_hooks=[], callbacks=[clock])
        trainer.fit(model, build_objective(objective_config()), data, collate_fn=collate)
        elapsed = CLOCK() - start
    return clock, elapsed


def run_bare_ddp(model: DualEncoder, data: MemoryImageText, cfg: TrainConfig, seed: int, rank: int,
                 world: int) -> tuple[StepClock, float]:
    """A bare DDP loop on the default process group (already initialised); wall-clock times."""
    clock_fn = time.perf_counter
    objective = build_objective(objective_config())
    task = torch.nn.parallel.DistributedDataParallel(TrainTask(model, objective))
    optimizer, _ = build_optimizer(task.module, cfg.optimizer)
    sampler = ResumableSampler(len(data), seed=seed, num_replicas=world, rank=rank)
    steps_per_epoch = -(-sampler.samples_per_replica // cfg.batch_size)
    scheduler, _ = build_scheduler(optimizer, cfg.schedule, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs)
    seed_everything(seed + rank)
    clock = StepClock()
    start = clock_fn()
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                            generator=torch.Generator().manual_seed(seed))
        for batch in loader:
            _, losses = task(batch)
            losses["total"].backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            model.clamp_()
            clock.times.setdefault(epoch, []).append(clock_fn())
            clock.losses.append(float(losses["total"].detach()))
    total = clock_fn() - start
    # after the timing: the mean over processes of each step's loss (what the trainer logs)
    summed = torch.tensor(clock.losses, dtype=torch.float64)
    torch.distributed.all_reduce(summed)
    clock.losses = (summed / world).tolist()
    return clock, total


def _ddp_worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    """One process of the multi-process comparison; rank 0 writes the timings to ``out``."""
    import json
    import os

    from medvl.training.fabric_setup import build_fabric

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "NODE_RANK": "0"})
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = MemoryImageText(args.records, args.image_size, args.seed)
    base = build_dual_encoder(args.image_size)
    base.train_tokenizer(data.texts)
    cfg = train_config(args).model_copy(update={"devices": world, "strategy": "ddp"})
    fabric = build_fabric(cfg)  # processes started by us: Fabric only joins the process group
    rows = []
    for repeat in range(args.repeats):
        order = ("bare", "trainer") if repeat % 2 == 0 else ("trainer", "bare")
        result: dict[str, Any] = {}
        for which in order:
            cpu_start = CLOCK()
            if which == "bare":
                clock, total = run_bare_ddp(copy.deepcopy(base), data, cfg, args.seed, rank, world)
            else:
                clock = StepClock(time.perf_counter)
                run_dir = Path(out).parent / f"run-{repeat}"  # shared by the processes, like a real run directory
                if rank == 0:
                    run_dir.mkdir()
                fabric.barrier()
                start = time.perf_counter()
                Trainer(cfg, run_dir, seed=args.seed, fabric=fabric, validation_hooks=[], callbacks=[clock]).fit(
                    copy.deepcopy(base), build_objective(objective_config()), data, collate_fn=collate)
                total = time.perf_counter() - start
            result[which] = {"step": per_step(clock.times), "total": total, "cpu": CLOCK() - cpu_start,
                             "steps": sum(len(t) for t in clock.times.values()), "losses": clock.losses}
            fabric.barrier()
        rows.append(result)
    if rank == 0:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(rows, handle)


def main_multiprocess(args: argparse.Namespace) -> None:
    """``--processes N``: the DDP comparison in N spawned processes."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rows.json")
        mp.spawn(_ddp_worker, args=(args.processes, port, args, out), nprocs=args.processes, join=True)
        rows = json.loads(Path(out).read_text())
    print("model: medvl DualEncoder (tiny ViT + tiny text transformer), objective: 0.5·CLIP + 0.5·BCE, "
          f"DDP over gloo, {args.processes} processes")
    print(f"records={args.records} batch={args.batch}/process image={args.image_size} epochs={args.epochs} "
          f"threads={args.threads}/process repeats={args.repeats} log_every={args.log_every}")
    step_ratios, total_ratios, cpu_ratios = [], [], []
    for i, row in enumerate(rows):
        bare, trainer = row["bare"], row["trainer"]
        step_ratios.append(trainer["step"] / bare["step"])
        total_ratios.append(trainer["total"] / bare["total"])
        cpu_ratios.append((trainer["cpu"] / trainer["steps"]) / (bare["cpu"] / bare["steps"]))
        first = "bare" if i % 2 == 0 else "trainer"
        print(f"  repeat {i} ({first} first): wall s/step bare {bare['step']:.4f}  trainer {trainer['step']:.4f}  "
              f"ratio {step_ratios[-1]:.3f}")
    diff = max(abs(a - b) for row in rows for a, b in zip(row["bare"]["losses"], row["trainer"]["losses"],
                                                          strict=True))
    print(f"trainer / bare DDP loop per-step wall time (median): {statistics.median(step_ratios):.3f}  "
          "(target <= 1.05)")
    print(f"trainer / bare DDP loop CPU time per step, rank 0 (median): {statistics.median(cpu_ratios):.3f}")
    print(f"trainer / bare DDP loop whole run incl. setup, checkpoints and logs (median): "
          f"{statistics.median(total_ratios):.3f}")
    print(f"max |loss difference| (trainer's logged global mean vs the bare loop's mean over processes): {diff:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4, help="even: each order runs equally often")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1, help="> 1: the multi-process (DDP, gloo) comparison")
    args = ap.parse_args()
    if args.processes > 1:
        main_multiprocess(args)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = MemoryImageText(args.records, args.image_size, args.seed)
    base = build_dual_encoder(args.image_size)
    base.train_tokenizer(data.texts)
    cfg = train_config(args)

    step_ratios, epoch_ratios, rows = [], [], []
    max_diff = 0.0
    for repeat in range(args.repeats):
        # alternate which loop runs first: in one process the second of two runs is measurably
        # slower or faster (allocator/cache state), which would bias a fixed order
        if repeat % 2 == 0:
            bare_clock, bare_total = run_bare(copy.deepcopy(base), data, cfg, args.seed)
            trainer_clock, trainer_total = run_trainer(copy.deepcopy(base), data, cfg, args.seed)
        else:
            trainer_clock, trainer_total = run_trainer(copy.deepcopy(base), data, cfg, args.seed)
            bare_clock, bare_total = run_bare(copy.deepcopy(base), data, cfg, args.seed)
        bare_step, trainer_step = per_step(bare_clock.times), per_step(trainer_clock.times)
        step_ratios.append(trainer_step / bare_step)
        epoch_ratios.append(trainer_total / bare_total)
        rows.append((bare_step, trainer_step))
        max_diff = max(max_diff, *(abs(a - b) for a, b in zip(bare_clock.losses, trainer_clock.losses, strict=True)))
    print("model: medvl DualEncoder (tiny ViT + tiny text transformer), objective: 0.5·CLIP + 0.5·BCE")
    print(f"records={args.records} batch={args.batch} image={args.image_size} epochs={args.epochs} "
          f"threads={args.threads} repeats={args.repeats} log_every={args.log_every}")
    for i, (bare_step, trainer_step) in enumerate(rows):
        first = "bare" if i % 2 == 0 else "trainer"
        print(f"  repeat {i} ({first} first): CPU s/step bare {bare_step:.4f}  trainer {trainer_step:.4f}  "
              f"ratio {trainer_step / bare_step:.3f}")
    print(f"trainer / bare per-step time (median): {statistics.median(step_ratios):.3f}  (target <= 1.05)")
    print(f"trainer / bare whole-run time incl. setup, checkpoints and logs (median): "
          f"{statistics.median(epoch_ratios):.3f}")
    print(f"max |loss difference| trainer vs bare loop: {max_diff:.2e}")


if __name__ == "__main__":
    main()
