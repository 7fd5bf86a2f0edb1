"""Tiny CoCa models and batches shared by the CoCa tests."""

from __future__ import annotations

import torch

from medvl.config.model import ModelConfig
from medvl.models import DualEncoder, build_model

CORPUS = [
    "small right pleural effusion.", "the heart is normal in size.", "no pneumothorax.",
    "large left pleural effusion with atelectasis.", "moderate cardiomegaly.", "support devices in place.",
]


def tiny_coca(decoder: dict[str, object] | None = None, vision: dict[str, object] | None = None) -> DualEncoder:
    cfg = ModelConfig.model_validate({
        "embed_dim": 16,
        "vision": vision or {"kind": "tiny_vit", "image_size": 16, "patch_size": 4, "in_channels": 1, "width": 16,
                             "depth": 1, "heads": 2},
        "text": {"kind": "tiny_text", "vocab_size": 96, "max_length": 24, "width": 16, "depth": 1, "heads": 2},
        "decoder": decoder or {"kind": "tiny", "width": 16, "heads": 2, "unimodal_layers": 1, "multimodal_layers": 1,
                               "max_length": 24},
    })
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train_tokenizer(CORPUS)
    return model


def make_batch(n: int = 3) -> dict[str, object]:
    g = torch.Generator().manual_seed(1)
    return {"pixel_values": torch.randn(n, 1, 16, 16, generator=g), "texts": CORPUS[:n]}
