"""A tiny dual encoder, objective and dataset following the DESIGN.md contracts (test helpers)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medvl.config.training import TrainConfig
from medvl.training.callbacks import Callback

LN_100 = math.log(100.0)


class TinyDataset(Dataset[dict[str, Any]]):
    """``n`` records: an 8-d "image", a 6-d "text" vector and a 3-class label."""

    def __init__(self, n: int = 20, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (n,), generator=g)
        self.images = torch.randn(n, 8, generator=g) + F.one_hot(self.labels, 8).float()
        self.texts = torch.randn(n, 6, generator=g) + F.one_hot(self.labels, 6).float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"id": f"r{i}", "index": i, "image": self.images[i], "text": self.texts[i], "label": self.labels[i]}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ids": [it["id"] for it in items],
        "index": torch.tensor([it["index"] for it in items]),
        "pixel_values": torch.stack([it["image"] for it in items]),
        "text_vectors": torch.stack([it["text"] for it in items]),
        "labels": {"cls": torch.stack([it["label"] for it in items])},
    }


class TinyDual(nn.Module):
    """Image MLP (with LayerNorm and dropout), text linear, classifier head, learnable logit scale."""

    def __init__(self, dim: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.vision = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(dropout),
                                    nn.Linear(16, dim))
        self.text = nn.Linear(6, dim)
        self.classifier = nn.Linear(dim, 3)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.poison_at_call: int | None = None
        self.calls = 0

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        image = self.vision(batch["pixel_values"])
        if self.poison_at_call is not None and self.calls >= self.poison_at_call:
            image = image * float("nan")
        text = self.text(batch["text_vectors"])
        return {
            "image_features": image,
            "image_embeds": image,
            "text_embeds": text,
            "logits.cls": self.classifier(image),
            "logit_scale": self.logit_scale.exp(),
        }

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, LN_100)


class TinyObjective(nn.Module):
    """``total = w_clip · CLIP + w_ce · CE`` (symmetric InfoNCE on normalised embeddings)."""

    def __init__(self, w_clip: float = 0.5, w_ce: float = 0.5, projector: bool = False) -> None:
        super().__init__()
        self.w_clip, self.w_ce = w_clip, w_ce
        self.projector = nn.Linear(4, 4) if projector else None

    def forward(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img, txt = outputs["image_embeds"], outputs["text_embeds"]
        if self.projector is not None:
            img = self.projector(img)
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        logits = outputs["logit_scale"] * img @ txt.T
        target = torch.arange(len(img))
        clip = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        ce = F.cross_entropy(outputs["logits.cls"], batch["labels"]["cls"])
        return {"total": self.w_clip * clip + self.w_ce * ce, "clip": clip, "ce": ce}


def tiny_config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "epochs": 2,
        "batch_size": 4,
        "deterministic": True,
        "accelerator": "cpu",
        "devices": 1,
        "optimizer": {"lr": 1e-2, "weight_decay": 0.1},
        "schedule": {"kind": "cosine", "warmup_steps": 2},
        "logging": {"every_n_steps": 1, "progress_bar": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TrainConfig.model_validate(base)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class KillAfter(Callback):
    """A callback that simulates a crash (KeyboardInterrupt) right after optimizer step ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        if record["step"] == self.k:
            raise KeyboardInterrupt(f"killed after step {self.k}")


def assert_same_last_checkpoint(run_a: Path, run_b: Path, file: str = "model.safetensors") -> dict[str, torch.Tensor]:
    """The last checkpoints of two runs hold the same tensors, bit for bit, in ``file``; returns ``run_a``'s."""
    from safetensors.torch import load_file

    from medvl.training import resolve_checkpoint

    a = load_file(str(resolve_checkpoint(run_a, "last") / file))
    b = load_file(str(resolve_checkpoint(run_b, "last") / file))
    assert a.keys() == b.keys(), file
    for name, value in a.items():
        assert torch.equal(b[name], value), (file, name)
    return a


def train_kill_resume(data: dict[str, Any], tmp: Path) -> Path:
    """Train the run config ``data`` with ``medvl train`` into ``tmp/full``; train it again into ``tmp/killed``,
    killed after step 3 and resumed with ``--resume``; assert both last checkpoints are bit-identical and
    that the vision tower's weights moved. Returns ``tmp/full``."""
    import pytest
    import yaml
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from medvl.cli.main import build_app
    from medvl.config.loading import config_from_dict
    from medvl.config.training import RunConfig
    from medvl.training.run import run_training

    cfg = config_from_dict(data, RunConfig)
    (tmp / "run.yaml").write_text(yaml.safe_dump(data))
    runner = CliRunner()
    full = runner.invoke(build_app(), ["train", str(tmp / "run.yaml"), "--out", str(tmp / "full")])
    assert full.exit_code == 0, full.output
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, tmp / "killed", callbacks=[KillAfter(3)])
    resumed = runner.invoke(build_app(), ["train", str(tmp / "run.yaml"), "--out", str(tmp / "killed"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    a = assert_same_last_checkpoint(tmp / "full", tmp / "killed")
    first = load_file(str(tmp / "full" / "model" / "model.safetensors"))
    assert any(not torch.equal(first[k], a[k]) for k in a if k.startswith("vision."))  # the tower trained
    return tmp / "full"

