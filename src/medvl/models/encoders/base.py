"""The small interface every tower implements.

An image tower maps a batch to features ``(B, feature_dim)``; a text tower tokenizes raw texts
and maps tokens to features ``(B, feature_dim)``. Both list their ``layer_groups()`` from input
to output, which is what freezing counts (see :mod:`medvl.models.freezing`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from medvl.config.model import FreezeConfig

__all__ = ["ImageEncoder", "TextEncoder", "check_texts", "maybe_checkpoint"]


class ImageEncoder(nn.Module, ABC):
    """Image (or slide) tower: ``encode_batch(batch) -> (B, feature_dim)`` float features.

    ``input_key`` names the batch entry the tower reads (``pixel_values`` or ``bag``).
    """

    feature_dim: int
    input_key: str = "pixel_values"

    @abstractmethod
    def layer_groups(self) -> list[nn.Module]:
        """Module groups ordered from input to output (embeddings first, final norm last)."""

    def save_assets(self, directory: Path) -> None:
        """Write what rebuilding this tower without network needs (HF config, ...) into ``directory``."""

    def resolve_freeze(self, freeze: FreezeConfig) -> FreezeConfig:
        """The freezing to apply; towers with their own freezing options (e.g. the slide encoder's
        ``freeze_levels``) translate them into a :class:`FreezeConfig` over ``layer_groups()``."""
        return freeze

    def encode_batch(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Read ``batch[input_key]`` and return features (B, feature_dim)."""
        return self(self._input(batch))

    def _input(self, batch: Mapping[str, Any]) -> Any:
        if self.input_key not in batch:
            raise KeyError(
                f"{type(self).__name__} reads batch[{self.input_key!r}] but the batch has keys {sorted(batch)}"
            )
        return batch[self.input_key]

    #: width of the token outputs of :meth:`encode_tokens` (towers that have them)
    token_dim: int | None = None

    def encode_tokens(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, feature_dim) and token outputs (B, N, token_dim) of one forward pass — what a
        captioning decoder cross-attends to. Towers without token outputs raise ``TypeError``."""
        raise TypeError(
            f"{type(self).__name__} has no token outputs for a captioning decoder (towers with them: tiny_vit, "
            "tiny_cnn, hf, timm, open_clip)"
        )


class TextEncoder(nn.Module, ABC):
    """Text tower: ``tokenize(texts) -> dict of LongTensors``; ``forward(tokens) -> (B, feature_dim)``."""

    feature_dim: int

    @abstractmethod
    def layer_groups(self) -> list[nn.Module]:
        """Module groups ordered from input to output."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask (CPU tensors, shape (B, T)) for a list of texts."""

    @abstractmethod
    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Features (B, feature_dim) from the output of :meth:`tokenize` (moved to any device)."""

    def needs_tokenizer_training(self) -> bool:
        """True when the tokenizer must be trained on a corpus before use."""
        return False

    def train_tokenizer(self, texts: Sequence[str]) -> None:
        """Train the tokenizer on ``texts`` (only towers whose tokenizer is trained by medvl)."""
        raise TypeError(f"{type(self).__name__} uses a pretrained tokenizer; there is nothing to train")

    def save_assets(self, directory: Path) -> None:
        """Write the tokenizer (and, for HF towers, the model config) into ``directory`` (no pickles)."""


def check_texts(texts: Sequence[str]) -> list[str]:
    """Validate a list of raw texts: a non-empty sequence of non-blank ``str``.

    Raises ``TypeError``/``ValueError`` naming the offending position.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    if not out:
        raise ValueError("texts is empty")
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace only")
    return out


def maybe_checkpoint(block: nn.Module, *args: Any, enabled: bool, **kwargs: Any) -> Any:
    """``block(*args, **kwargs)``, recomputed in backward (non-reentrant checkpoint) when ``enabled``
    and gradients are being recorded."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    return block(*args, **kwargs)
