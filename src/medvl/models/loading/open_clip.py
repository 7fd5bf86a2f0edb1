"""open_clip checkpoints (incl. BiomedCLIP), embedded exactly as open_clip does.

A directory with ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and weights
(``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``), or an ``hf-hub:`` id, is
loaded with ``open_clip.create_model_from_pretrained("local-dir:…")`` and
``open_clip.get_tokenizer``; images go through the returned ``preprocess`` transform (its
resize mode, interpolation, crop, mean and std), texts through the tokenizer (padded to the
model's context length, truncated), and embeddings are ``encode_image``/``encode_text``.
BiomedCLIP's layout — a timm ViT image tower and a Hugging Face (PubMedBERT-style BERT) text
tower — is just such a config (``vision_cfg.timm_model_name``, ``text_cfg.hf_model_name``).

open_clip exposes no pre-projection output, so ``image_features``/``text_features`` are the
joint embeddings. A Hugging Face text tower whose directory ships its own code (``auto_map``) is
refused: open_clip gives no way to pass ``trust_remote_code``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medvl.models.loading.base import InputKind, ModelInfo, ModelLoadError, as_pil_images, weights_hashes
from medvl.models.loading.hf import check_remote_code
from medvl.utils.compat import import_optional

__all__ = ["OpenClipModel"]


class OpenClipModel:
    """A local open_clip checkpoint (see the module docstring)."""

    input_kind: InputKind = "raw"

    def __init__(self, directory: str | Path, *, device: str = "cpu", trust_remote_code: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        open_clip = import_optional("open_clip", "open_clip checkpoints")
        root = Path(directory)
        cfg = dict(config or {})
        model_cfg = dict(cfg.get("model_cfg") or {})
        text_cfg = dict(model_cfg.get("text_cfg") or {})
        vision_cfg = dict(model_cfg.get("vision_cfg") or {})
        for key in ("hf_model_name", "hf_tokenizer_name"):
            local = Path(str(text_cfg.get(key, "")))
            if text_cfg.get(key) and local.is_dir() and check_remote_code(local, trust_remote_code):
                raise ModelLoadError(f"{root}: its text tower {local} ships its own code (auto_map); open_clip "
                                     "cannot be told to trust it, so medvl does not load it")
        name = f"local-dir:{root}"
        try:
            model, preprocess = open_clip.create_model_from_pretrained(name, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"{root}: open_clip cannot build this model ({type(exc).__name__}: {exc})") from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.context_length = int(getattr(tokenizer, "context_length", 0) or text_cfg.get("context_length", 77))
        vision = str(vision_cfg.get("timm_model_name") or f"open_clip ViT (width {vision_cfg.get('width')}, "
                     f"layers {vision_cfg.get('layers')}, patch {vision_cfg.get('patch_size')})")
        text = str(text_cfg.get("hf_model_name") or f"open_clip transformer (width {text_cfg.get('width')}, "
                   f"layers {text_cfg.get('layers')})")
        self.family = "open_clip"
        self.identity = {"format": "open_clip", "family": self.family, "path": str(root),
                         "weights": weights_hashes(root), "trust_remote_code": bool(trust_remote_code)}
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale.exp().detach()) if isinstance(scale, torch.Tensor) else None
        self.has_text = True
        tok_name = type(tokenizer).__name__
        inner = getattr(tokenizer, "tokenizer", None)
        if inner is not None and not isinstance(inner, (str, bytes)):
            tok_name += f" ({type(inner).__name__})"
        self._info = ModelInfo(
            format="open_clip", family=self.family, path=str(root),
            towers={"vision": vision, "text": text},
            embed_dim=int(model_cfg.get("embed_dim") or 0) or None,
            image_preprocessing={"by": "open_clip preprocess", **dict(cfg.get("preprocess_cfg") or {}),
                                 "transform": repr(preprocess).replace("\n", " ")},
            text_preprocessing={"tokenizer": tok_name, "max_length": self.context_length, "padding": "max_length",
                                "truncation": True, "attention_mask": False,
                                "rule": "open_clip tokenizer: pad/truncate to the model's context length"},
            trust_remote_code=bool(trust_remote_code),
            extra={"image_features": "joint embedding (open_clip has no pre-projection output)"},
        )

    def info(self) -> ModelInfo:
        return self._info

    def image_transform(self) -> None:
        return None  # open_clip's preprocess runs inside encode_images

    def image_inputs(self, images: list[Any]) -> torch.Tensor:
        """open_clip's ``preprocess`` of each image, stacked (B, C, H, W) on the model's device."""
        return torch.stack([self.preprocess(img) for img in images]).to(self.device)

    @torch.no_grad()
    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        emb = self.model.encode_image(self.image_inputs(as_pil_images(batch, f"open_clip ({self.identity['path']})")))
        return {"image_emb": emb, "image_features": emb}

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return emb, None
