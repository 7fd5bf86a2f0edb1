"""What every loaded model offers (:class:`EmbeddingModel`), what ``inspect`` reports
(:class:`ModelInfo`) and the loader's error (:class:`ModelLoadError`).

Two ways images reach a model:

* ``input_kind == "raw"`` — a published family (Hugging Face, open_clip, timm): the model
  preprocesses decoded images itself with the family's own processor (``batch["images"]``: a list
  of 8-bit RGB ``PIL.Image``), exactly as its authors' code does;
* ``input_kind == "tensor"`` — a medvl ``DualEncoder``: the dataset applies medvl's transforms
  (the run's evaluation transform, the one it was trained with) and the batch carries
  ``pixel_values`` (B, C, H, W) or feature bags.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from medvl.config.loading import ConfigError
from medvl.utils.hashing import hash_file

__all__ = [
    "EmbeddingModel",
    "InputKind",
    "ModelInfo",
    "ModelLoadError",
    "as_pil_images",
    "weights_hashes",
]

InputKind = Literal["raw", "tensor"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class ModelLoadError(ConfigError):
    """A model spec that cannot be loaded as asked (unknown format, missing files, code the user did
    not allow, a checkpoint that is no vision–language model); the message says what was looked for."""


@dataclass
class ModelInfo:
    """What ``medvl models inspect`` prints and ``results.json`` records about a model.

    ``image_preprocessing``/``text_preprocessing`` are JSON-able: who preprocesses (the family's
    processor class or medvl's transform) with its settings; for text the tokenizer class,
    ``max_length``, the ``padding`` rule, ``truncation`` and whether an attention mask is passed.
    """

    format: str  # hf | open_clip | timm | medvl | embeddings
    family: str  # clip, siglip, siglip2, align, metaclip_2, open_clip, timm, medvl, precomputed, ...
    path: str
    towers: dict[str, str] = field(default_factory=dict)
    embed_dim: int | None = None
    image_preprocessing: dict[str, Any] = field(default_factory=dict)
    text_preprocessing: dict[str, Any] | None = None
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable ``key: value`` lines (``medvl models inspect``)."""
        text = self.text_preprocessing
        out = [
            f"format: {self.format}",
            f"family: {self.family}",
            f"path: {self.path}",
            *(f"{name} tower: {desc}" for name, desc in self.towers.items()),
            f"embedding dim: {self.embed_dim if self.embed_dim is not None else 'unknown'}",
            "image preprocessing: " + _fmt(self.image_preprocessing),
        ]
        if text is None:
            out.append("text: none (image-only model)")
        else:
            out += [
                f"tokenizer: {text.get('tokenizer', 'n/a')}",
                f"max text length: {text.get('max_length', 'n/a')}",
                f"padding: {text.get('padding', 'n/a')}"
                + (", no attention mask" if text.get("attention_mask") is False else ""),
            ]
        out.append(f"trust_remote_code: {str(self.trust_remote_code).lower()}")
        out += [f"{k}: {_fmt(v) if isinstance(v, dict) else v}" for k, v in self.extra.items()]
        return out


def _fmt(value: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "n/a"


@runtime_checkable
class EmbeddingModel(Protocol):
    """What extraction and evaluation need from a model (see the module docstring)."""

    #: JSON-able description (format, family, path, weight hashes) for provenance and cache keys
    identity: dict[str, Any]
    #: learnt logit scale (exp of the log-scale), or None
    logit_scale: float | None
    #: whether the model has a text tower (image-only models give an EmbeddingSet without captions)
    has_text: bool
    #: ``raw``: ``encode_images`` reads ``batch["images"]`` (decoded PIL images); ``tensor``: pixel tensors
    input_kind: InputKind

    def info(self) -> ModelInfo:
        """Family, towers, embedding dim, image and text preprocessing."""
        ...

    def image_transform(self) -> Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None:
        """For ``tensor`` models: the deterministic transform to use (None = the data config's)."""
        ...

    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``image_emb`` (B, D), optional ``image_features`` (B, F) and ``logits/<name>`` (B, C)."""
        ...

    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Joint-space text embeddings (n, D) and optional pre-projection features (n, F)."""
        ...


def weights_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every weight file under ``directory`` (relative path → hash); error when there is none."""
    files = sorted(p for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not files:
        raise ModelLoadError(f"{directory}: no weight files (*.safetensors / *.bin / *.pt / *.pth)")
    return {str(p.relative_to(directory)): hash_file(p) for p in files}


def as_pil_images(batch: dict[str, Any], who: str) -> list[Any]:
    """``batch["images"]`` as a list of RGB ``PIL.Image`` (uint8 (H, W, 3) arrays are converted)."""
    import numpy as np
    from PIL import Image

    images = batch.get("images")
    if images is None:
        if "bag" in batch:
            raise ModelLoadError(f"{who} encodes images, not feature bags (bag); use a medvl slide model")
        raise ModelLoadError(
            f"{who} preprocesses decoded images itself: the batch needs 'images' (an evaluation dataset "
            "with raw_images=True), not only pixel_values"
        )
    out: list[Any] = []
    for i, img in enumerate(_as_sequence(images)):
        if isinstance(img, Image.Image):
            out.append(img if img.mode == "RGB" else img.convert("RGB"))
        else:
            arr = np.asarray(img)
            if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
                raise ModelLoadError(f"images[{i}]: expected an RGB PIL image or uint8 (H, W, 3) array, "
                                     f"got {arr.dtype} {arr.shape}")
            out.append(Image.fromarray(arr))
    return out


def _as_sequence(images: Any) -> Sequence[Any]:
    return list(images)
