"""Plain-dict registries of tower builders, keyed by the config's ``kind``.

A builder takes ``(tower_config, assets_dir)`` and returns a tower. ``assets_dir`` is None for a
fresh model and, for :meth:`DualEncoder.from_pretrained`, the saved directory of that tower
(HF config, tokenizer), so rebuilding never downloads anything. Heavy backends (transformers)
are imported only when their builder runs. To add a backend: write an ``ImageEncoder`` /
``TextEncoder``, a config class with a new ``kind`` in :mod:`medvl.config.model`, and register it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvl.models.encoders.base import ImageEncoder, TextEncoder

__all__ = [
    "TEXT_ENCODERS",
    "VISION_ENCODERS",
    "build_text_encoder",
    "build_vision_encoder",
    "register_text_encoder",
    "register_vision_encoder",
]

VisionBuilder = Callable[[Any, Path | None], ImageEncoder]
TextBuilder = Callable[[Any, Path | None], TextEncoder]


def _tiny_cnn(cfg: Any, assets_dir: Path | None) -> ImageEncoder:
    from medvl.models.encoders.tiny import TinyCNN

    return TinyCNN(cfg)


def _tiny_vit(cfg: Any, assets_dir: Path | None) -> ImageEncoder:
    from medvl.models.encoders.tiny import TinyViT

    return TinyViT(cfg)


def _slide(cfg: Any, assets_dir: Path | None) -> ImageEncoder:
    from medvl.models.encoders.slide import SlideEncoder

    encoder = SlideEncoder(cfg)
    if cfg.weights is not None and assets_dir is None:  # a saved model brings its own weights
        from medvl.models.encoders.hipt import load_slide_weights

        load_slide_weights(encoder, cfg.weights)
    return encoder


def _hf_vision(cfg: Any, assets_dir: Path | None) -> ImageEncoder:
    from medvl.models.encoders.hf import HFVisionEncoder

    return HFVisionEncoder(cfg, assets_dir)


def _timm_vision(cfg: Any, assets_dir: Path | None) -> ImageEncoder:
    from medvl.models.encoders.timm import TimmVisionEncoder

    return TimmVisionEncoder(cfg, assets_dir)


def _open_clip_vision(cfg: Any, assets_dir: Path | None) -> ImageEncoder:
    from medvl.models.encoders.open_clip import OpenClipVisionEncoder

    return OpenClipVisionEncoder(cfg, assets_dir)


def _open_clip_text(cfg: Any, assets_dir: Path | None) -> TextEncoder:
    from medvl.models.encoders.open_clip import OpenClipTextEncoder

    return OpenClipTextEncoder(cfg, assets_dir)


def _tiny_text(cfg: Any, assets_dir: Path | None) -> TextEncoder:
    from medvl.models.encoders.tiny import TinyTextTransformer

    return TinyTextTransformer(cfg, assets_dir)


def _hf_text(cfg: Any, assets_dir: Path | None) -> TextEncoder:
    from medvl.models.encoders.hf import HFTextEncoder

    return HFTextEncoder(cfg, assets_dir)


VISION_ENCODERS: dict[str, VisionBuilder] = {
    "tiny_cnn": _tiny_cnn,
    "tiny_vit": _tiny_vit,
    "hf": _hf_vision,
    "timm": _timm_vision,
    "open_clip": _open_clip_vision,
    "slide": _slide,
}
TEXT_ENCODERS: dict[str, TextBuilder] = {
    "tiny_text": _tiny_text,
    "hf": _hf_text,
    "open_clip": _open_clip_text,
}


def register_vision_encoder(kind: str, builder: VisionBuilder) -> None:
    """Add (or replace) the builder for vision ``kind``."""
    VISION_ENCODERS[kind] = builder


def register_text_encoder(kind: str, builder: TextBuilder) -> None:
    """Add (or replace) the builder for text ``kind``."""
    TEXT_ENCODERS[kind] = builder


def _lookup(registry: dict[str, Any], kind: str, what: str) -> Any:
    try:
        return registry[kind]
    except KeyError:
        raise KeyError(f"unknown {what} kind {kind!r}; registered: {sorted(registry)}") from None


def build_vision_encoder(cfg: Any, assets_dir: Path | None = None) -> ImageEncoder:
    """Build the vision tower named by ``cfg.kind``."""
    encoder = _lookup(VISION_ENCODERS, cfg.kind, "vision encoder")(cfg, assets_dir)
    if not isinstance(encoder, ImageEncoder):
        raise TypeError(f"vision builder {cfg.kind!r} returned {type(encoder).__name__}, not an ImageEncoder")
    return encoder


def build_text_encoder(cfg: Any, assets_dir: Path | None = None) -> TextEncoder:
    """Build the text tower named by ``cfg.kind``."""
    encoder = _lookup(TEXT_ENCODERS, cfg.kind, "text encoder")(cfg, assets_dir)
    if not isinstance(encoder, TextEncoder):
        raise TypeError(f"text builder {cfg.kind!r} returned {type(encoder).__name__}, not a TextEncoder")
    return encoder
