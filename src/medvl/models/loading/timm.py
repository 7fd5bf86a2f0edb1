"""timm image backbones (image-only), embedded exactly as timm does.

A directory in timm's Hugging Face layout (``config.json`` with ``architecture``, usually
``pretrained_cfg``, plus ``model.safetensors`` / ``pytorch_model.bin``; written by
``timm.models.save_for_hf``) is loaded with ``timm.create_model("local-dir:…", pretrained=True)``.
Images get timm's own evaluation transform (``resolve_data_config`` + ``create_transform``:
its resize, crop percentage, interpolation, mean and std); the embedding is the pooled,
pre-classifier feature ``forward_head(forward_features(x), pre_logits=True)``. There is no text
tower: such a model gives image embeddings for probes and image-side analyses (retrieval and
zero-shot need a text tower — pair the backbone with one in a medvl training config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medvl.models.loading.base import InputKind, ModelInfo, ModelLoadError, as_pil_images, weights_hashes
from medvl.utils.compat import import_optional

__all__ = ["TimmImageModel"]


class TimmImageModel:
    """A local timm checkpoint (see the module docstring)."""

    input_kind: InputKind = "raw"

    def __init__(self, directory: str | Path, *, device: str = "cpu", config: dict[str, Any] | None = None) -> None:
        timm = import_optional("timm", "timm checkpoints")
        root = Path(directory)
        try:
            model = timm.create_model(f"local-dir:{root}", pretrained=True)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{root}: timm cannot build this model ({type(exc).__name__}: {exc})") from None
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        data_cfg = timm.data.resolve_data_config({}, model=model)
        self.data_config = dict(data_cfg)
        self.transform = timm.data.create_transform(**data_cfg, is_training=False)
        self.architecture = str((config or {}).get("architecture", type(model).__name__))
        self.identity = {"format": "timm", "family": "timm", "architecture": self.architecture, "path": str(root),
                         "weights": weights_hashes(root)}
        self.logit_scale: float | None = None
        self.has_text = False
        self._info = ModelInfo(
            format="timm", family="timm", path=str(root), towers={"vision": self.architecture},
            embed_dim=int(getattr(model, "head_hidden_size", 0) or getattr(model, "num_features", 0) or 0) or None,
            image_preprocessing={"by": "timm create_transform", **{k: _plain(v) for k, v in data_cfg.items()}},
            text_preprocessing=None,
        )

    def info(self) -> ModelInfo:
        return self._info

    def image_transform(self) -> None:
        return None  # timm's transform runs inside encode_images

    def image_inputs(self, images: list[Any]) -> torch.Tensor:
        """timm's evaluation transform of each image, stacked (B, C, H, W) on the model's device."""
        return torch.stack([self.transform(img) for img in images]).to(self.device)

    @torch.no_grad()
    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = self.image_inputs(as_pil_images(batch, f"timm {self.architecture} ({self.identity['path']})"))
        emb = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return {"image_emb": emb, "image_features": emb}

    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise ModelLoadError(f"timm {self.architecture} ({self.identity['path']}) is an image-only model: "
                             "it has no text tower to encode texts")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
