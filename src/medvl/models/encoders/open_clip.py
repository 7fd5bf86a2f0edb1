"""open_clip towers as medvl towers (``vision: {kind: open_clip}``, ``text: {kind: open_clip}``).

The open_clip model is built from a built-in name (with an optional weight tag), a local open_clip
directory / ``local-dir:``, an ``hf-hub:`` id (e.g. BiomedCLIP: timm ViT + PubMedBERT), or an explicit
``model_cfg``; the vision tower keeps ``model.visual`` (its own projection included), the text tower
``model.text`` (built with ``force_custom_text``; open_clip converts CLIP checkpoints to that layout)
with open_clip's tokenizer. FLIP uses open_clip's own ``patch_dropout`` (training mode only).

Layer groups, input to output: everything registered before the first block (patch/token embedding,
class and position embeddings, pre-norm), each block (``resblocks.i`` / ``layer.i`` / timm trunk
blocks), then everything after (final norm, pooling, projection). Saved models keep
``open_clip_config.json`` (and, for a Hugging Face text tower, its config and tokenizer), so they
rebuild offline; the weights come from medvl's safetensors.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.models.encoders.base import ImageEncoder, TextEncoder, check_texts
from medvl.models.encoders.groups import groups_from_names
from medvl.models.encoders.pooling import spatial_tokens
from medvl.models.encoders.timm import timm_tokens
from medvl.utils.compat import import_optional
from medvl.utils.io import atomic_write_json, read_json

__all__ = ["OpenClipTextEncoder", "OpenClipVisionEncoder", "build_open_clip"]

CONFIG_FILE = "open_clip_config.json"
HF_SELF = "."  # a saved HF text tower's config/tokenizer live in the tower's own assets directory
_BLOCK = re.compile(r"(?:resblocks|layers?|blocks|stages)\.(\d+)\.|^(?:trunk\.)?layer(\d+)\.")


@contextmanager
def _registered(model_cfg: dict[str, Any]) -> Iterator[str]:
    from open_clip import factory

    name = f"medvl-{uuid.uuid4().hex[:12]}"
    factory._MODEL_CONFIGS[name] = model_cfg
    try:
        yield name
    finally:
        factory._MODEL_CONFIGS.pop(name, None)


def build_open_clip(cfg: Any, assets_dir: Path | None, *, patch_dropout: float | None = None,
                    tokenizer: bool = False) -> tuple[Any, dict[str, Any], Any]:
    """(model, model_cfg, tokenizer or None) for an open_clip tower config (see the module docstring)."""
    open_clip = import_optional("open_clip", "open_clip towers")
    kwargs: dict[str, Any] = {"force_custom_text": True}
    if patch_dropout:
        kwargs["force_patch_dropout"] = patch_dropout
    if assets_dir is not None and (assets_dir / CONFIG_FILE).is_file():
        model_cfg = dict(read_json(assets_dir / CONFIG_FILE)["model_cfg"])
        text_cfg = dict(model_cfg.get("text_cfg") or {})
        for key in ("hf_model_name", "hf_tokenizer_name"):
            if text_cfg.get(key) == HF_SELF:
                text_cfg[key] = str(assets_dir)
        model_cfg["text_cfg"] = text_cfg
        with _registered(model_cfg) as name:  # weights come from medvl's safetensors, not the towers' sources
            model = open_clip.create_model(name, pretrained=None, pretrained_image=False, pretrained_hf=False,
                                           **kwargs)
        return model, model_cfg, _tokenizer(open_clip, f"local-dir:{assets_dir}", model_cfg) if tokenizer else None
    if cfg.model_cfg is not None:
        model_cfg = dict(cfg.model_cfg)
        with _registered(model_cfg) as name:
            model = open_clip.create_model(name, pretrained=None, **kwargs)
            tok = open_clip.get_tokenizer(name) if tokenizer else None
        return model, model_cfg, tok
    spec = str(cfg.model)
    if Path(spec).is_dir():
        spec = f"local-dir:{spec}"
    model_cfg = open_clip.get_model_config(spec)
    if model_cfg is None:
        raise ValueError(f"open_clip model {cfg.model!r}: no such built-in name, directory or hub id")
    model = open_clip.create_model(spec, pretrained=cfg.pretrained, **kwargs)
    return model, dict(model_cfg), open_clip.get_tokenizer(spec) if tokenizer else None


def _tokenizer(open_clip: Any, spec: str, model_cfg: dict[str, Any]) -> Any:
    if (model_cfg.get("text_cfg") or {}).get("hf_tokenizer_name"):
        return open_clip.get_tokenizer(spec)
    with _registered(model_cfg) as name:
        return open_clip.get_tokenizer(name)


def _layer_groups(module: nn.Module) -> list[nn.Module]:
    """Parameters before the first block, each block, parameters after the last block."""
    head: list[str] = []
    blocks: dict[int, list[str]] = {}
    tail: list[str] = []
    for name, _ in module.named_parameters():
        match = _BLOCK.search(name)
        if match:
            blocks.setdefault(int(match.group(1) or match.group(2)), []).append(name)
        elif blocks:
            tail.append(name)
        else:
            head.append(name)
    groups = [head, *(blocks[k] for k in sorted(blocks)), tail]
    return groups_from_names(module, [g for g in groups if g])


def _save_config(model_cfg: dict[str, Any], directory: Path, hf_text: Any = None, tokenizer: Any = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    saved = dict(model_cfg)
    if hf_text is not None:
        text_cfg = dict(saved.get("text_cfg") or {})
        text_cfg.update({"hf_model_name": HF_SELF, "hf_tokenizer_name": HF_SELF, "hf_model_pretrained": False})
        saved["text_cfg"] = text_cfg
        hf_text.config.save_pretrained(str(directory))
        inner = getattr(tokenizer, "tokenizer", None)
        if inner is not None and hasattr(inner, "save_pretrained"):
            inner.save_pretrained(str(directory))
    atomic_write_json(directory / CONFIG_FILE, {"model_cfg": saved})


def _token_dim(visual: nn.Module) -> int | None:
    """Width of :meth:`OpenClipVisionEncoder.encode_tokens`' tokens (None: a tower type without them)."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):  # an attentional pooler's queries, else the residual width
        return int(visual.attn_pool.query.shape[-1]) if visual.attn_pool is not None else int(visual.transformer.width)
    if isinstance(visual, TimmModel):
        return int(visual.trunk.num_features)
    if isinstance(visual, ModifiedResNet):
        return int(visual.attnpool.k_proj.in_features)  # the last stage's channels, which it pools
    return None


class OpenClipVisionEncoder(ImageEncoder):
    """``model.visual`` of an open_clip model → (B, embed_dim)."""

    def __init__(self, cfg: Any, assets_dir: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        drop = 1.0 - cfg.patch_keep_ratio if cfg.patch_keep_ratio < 1.0 else None
        model, self.model_cfg, _ = build_open_clip(cfg, assets_dir, patch_dropout=drop)
        self.visual = model.visual
        if drop and not hasattr(self.visual, "patch_dropout"):
            raise ValueError("vision.open_clip: patch_keep_ratio applies to open_clip ViT towers only")
        self.feature_dim = int(self.model_cfg.get("embed_dim") or self.visual.output_dim)
        self.token_dim = _token_dim(self.visual)
        mean, std = getattr(self.visual, "image_mean", None), getattr(self.visual, "image_std", None)
        self.preprocessing = {"image_mean": list(mean) if mean else None, "image_std": list(std) if std else None,
                              "size": self.model_cfg.get("vision_cfg", {}).get("image_size")}
        if cfg.grad_checkpointing:
            self.visual.set_grad_checkpointing(True)
        self._groups = _layer_groups(self.visual)

    @property
    def core(self) -> nn.Module:
        """open_clip's ``model.visual`` (what LoRA goes into; an exported adapter loads onto it)."""
        return self.visual

    def layer_groups(self) -> list[nn.Module]:
        return list(self._groups)

    def save_assets(self, directory: Path) -> None:
        _save_config(self.model_cfg, directory)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual(pixel_values)

    def encode_tokens(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features (= :meth:`forward`) and token outputs (B, N, token_dim) of one pass, as open_clip
        gives them: a ViT's ``output_tokens`` (its patch tokens after ``ln_post``, as open_clip's CoCa
        feeds its decoder; attention-pooled queries where the tower has an attentional pooler), a timm
        trunk's ``forward_features``, a ModifiedResNet's last stage (before its attention pool)."""
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        x, visual = self._input(batch), self.visual
        if isinstance(visual, VisionTransformer):
            previous = visual.output_tokens
            visual.output_tokens = True
            try:
                pooled, tokens = visual(x)
            finally:
                visual.output_tokens = previous
            return pooled, tokens
        if isinstance(visual, TimmModel):  # TimmModel.forward = head(trunk(x)), trunk(x) = head(features)
            features = visual.trunk.forward_features(x)
            return visual.head(visual.trunk.forward_head(features)), timm_tokens(visual.trunk, features)
        if isinstance(visual, ModifiedResNet):
            out = visual.forward_intermediates(x, indices=[4])  # stem, layer1..4: the last stage's map
            return out["image_features"], spatial_tokens(out["image_intermediates"][-1])
        raise TypeError(f"open_clip vision tower {type(visual).__name__} has no token outputs for a decoder")


class OpenClipTextEncoder(TextEncoder):
    """``model.text`` of an open_clip model with its tokenizer → (B, embed_dim)."""

    def __init__(self, cfg: Any, assets_dir: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        model, self.model_cfg, self.tokenizer = build_open_clip(cfg, assets_dir, tokenizer=True)
        self.text = model.text
        self.feature_dim = int(self.model_cfg.get("embed_dim") or self.text.output_dim)
        self.max_length = int(getattr(self.tokenizer, "context_length", 0) or 77)
        if cfg.grad_checkpointing:
            self.text.set_grad_checkpointing(True)
        self._groups = _layer_groups(self.text)

    @property
    def core(self) -> nn.Module:
        """open_clip's ``model.text`` (what LoRA goes into; an exported adapter loads onto it)."""
        return self.text

    def layer_groups(self) -> list[nn.Module]:
        return list(self._groups)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(check_texts(texts)).long()
        return {"input_ids": ids}

    def save_assets(self, directory: Path) -> None:
        hf = getattr(self.text, "transformer", None) if hasattr(self.text, "config") else None
        _save_config(self.model_cfg, directory, hf_text=hf, tokenizer=self.tokenizer)

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.text(tokens["input_ids"])
