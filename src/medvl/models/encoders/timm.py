"""timm image backbones as medvl vision towers (``vision: {kind: timm, ...}``).

``timm.create_model(model_name, pretrained=…, num_classes=0, **model_args)``; features are timm's
pooled pre-classifier features, ``forward_head(forward_features(x), pre_logits=True)``
(B, ``num_features``). Layer groups come from timm's own ``group_matcher`` (fine: stem, each
block, then unmatched parameters such as the final norm), so ``freeze: {mode: partial, groups: N}``
freezes the stem and the first N−1 blocks. FLIP patch dropout uses timm's own ``patch_drop_rate``
(ViT-style models; active in training mode only). Saved models keep ``timm_tower.json``
(architecture + arguments + the checkpoint's preprocessing), so they rebuild offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from medvl.config.model import TimmVisionConfig
from medvl.models.encoders.base import ImageEncoder
from medvl.models.encoders.groups import groups_from_names
from medvl.models.encoders.pooling import spatial_tokens
from medvl.utils.compat import import_optional
from medvl.utils.io import atomic_write_json, read_json

__all__ = ["TimmVisionEncoder", "timm_tokens"]

TOWER_FILE = "timm_tower.json"


class TimmVisionEncoder(ImageEncoder):
    """A timm backbone → pooled pre-logits features (B, feature_dim)."""

    def __init__(self, cfg: TimmVisionConfig, assets_dir: Path | None = None) -> None:
        super().__init__()
        timm = import_optional("timm", "timm vision towers")
        self.cfg = cfg
        args = dict(cfg.model_args)
        saved = assets_dir is not None and (assets_dir / TOWER_FILE).is_file()
        if saved:
            assert assets_dir is not None
            meta = read_json(assets_dir / TOWER_FILE)
            name, pretrained, args = str(meta["architecture"]), False, dict(meta["model_args"])
        else:
            name, pretrained = cfg.model_name, cfg.pretrained
        extra = {"patch_drop_rate": 1.0 - cfg.patch_keep_ratio} if cfg.patch_keep_ratio < 1.0 else {}
        try:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=0, **args, **extra)
        except TypeError as exc:
            if extra and "patch_drop_rate" in str(exc):
                raise ValueError(f"vision.timm ({cfg.model_name}): this architecture has no patch dropout; "
                                 "patch_keep_ratio applies to ViT-style models") from None
            raise
        except RuntimeError as exc:
            raise ValueError(f"vision.timm.model_name {cfg.model_name!r}: {exc}") from None
        self.architecture = str(self.model.pretrained_cfg.get("architecture") or name)
        self.model_args = args
        # timm's convention: num_features = channels of forward_features (the tokens), head_hidden_size =
        # the pre-logits width (they differ where a head conv follows the pool, e.g. MobileNetV3)
        self.token_dim = int(self.model.num_features)
        self.feature_dim = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        data = timm.data.resolve_data_config({}, model=self.model)
        self.preprocessing: dict[str, Any] = {
            "size": list(data["input_size"][1:]), "image_mean": list(data["mean"]), "image_std": list(data["std"]),
            "interpolation": data.get("interpolation"), "crop_pct": data.get("crop_pct"),
        }
        if cfg.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        from timm.models import group_parameters

        grouped = group_parameters(self.model, self.model.group_matcher(coarse=False))
        self._groups = groups_from_names(self.model, [grouped[k] for k in sorted(grouped)])

    @property
    def core(self) -> torch.nn.Module:
        """The timm model itself (what LoRA goes into; an exported adapter loads onto ``timm.create_model``'s model)."""
        return self.model

    def layer_groups(self) -> list[torch.nn.Module]:
        return list(self._groups)

    def save_assets(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / TOWER_FILE, {"architecture": self.architecture, "model_args": self.model_args,
                                                   "preprocessing": self.preprocessing})

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) pixel values (normalised as the checkpoint expects) → (B, feature_dim)."""
        return self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)

    def encode_tokens(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features (= :meth:`forward`) and ``forward_features``' output as tokens (B, N, token_dim):
        a ViT's normed sequence (prefix tokens included), a CNN's last feature map positions."""
        features = self.model.forward_features(self._input(batch))
        return self.model.forward_head(features, pre_logits=True), timm_tokens(self.model, features)


def timm_tokens(model: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``model.forward_features(x)`` of a timm model as tokens (B, N, C): sequences as they are, feature
    maps (NCHW, or NHWC for models whose ``output_fmt`` says so, e.g. Swin) flattened row-major."""
    if features.ndim == 3:
        return features
    return spatial_tokens(features, channels_last=str(getattr(model, "output_fmt", "NCHW")) == "NHWC")
