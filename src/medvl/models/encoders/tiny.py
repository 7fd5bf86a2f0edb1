"""Built-in compact towers for CPU work and tests: a CNN, a ViT with FLIP patch dropout and a
small transformer text encoder with a medvl-trained WordPiece (or any HF) tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.config.model import TinyCNNConfig, TinyTextConfig, TinyViTConfig
from medvl.models.encoders.base import ImageEncoder, TextEncoder, check_texts, maybe_checkpoint
from medvl.models.encoders.patch_dropout import PatchDropout
from medvl.models.encoders.pooling import pool_tokens, spatial_tokens
from medvl.models.encoders.tokenizer import (
    TOKENIZER_FILE,
    HFTokenizer,
    TextTokenizer,
    WordPieceTokenizer,
    load_text_tokenizer,
)

__all__ = ["TinyCNN", "TinyTextTransformer", "TinyViT", "TransformerBlock"]


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)); x + MLP(LN(x)). Tokens (B, T, D)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, eps: float = 1e-5) -> None:
        super().__init__()
        hidden = max(1, round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, width),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``key_padding_mask`` (B, T) is True at positions to ignore."""
        h = self.norm1(x)
        attn, _ = self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)
        x = x + attn
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------------------------- CNN
class TinyCNN(ImageEncoder):
    """Conv stem + one stride-2 stage per width + global average pooling → (B, widths[-1])."""

    def __init__(self, cfg: TinyCNNConfig) -> None:
        super().__init__()
        self.in_channels = cfg.in_channels
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.in_channels, w0, 3, padding=1, bias=False), nn.BatchNorm2d(w0), nn.ReLU()
        )
        stages = []
        prev = w0
        for width in cfg.widths:
            blocks: list[nn.Module] = []
            for b in range(cfg.blocks_per_stage):
                stride = 2 if b == 0 else 1
                blocks += [
                    nn.Conv2d(prev, width, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                prev = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.feature_dim = prev
        self.token_dim = prev
        self.grad_checkpointing = cfg.grad_checkpointing

    def layer_groups(self) -> list[nn.Module]:
        return [self.stem, *self.stages]

    def _feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.in_channels:
            raise ValueError(
                f"TinyCNN expects pixel_values (B, {self.in_channels}, H, W), got {tuple(pixel_values.shape)}"
            )
        x = self.stem(pixel_values)
        ckpt = self.grad_checkpointing and self.training
        for stage in self.stages:
            x = maybe_checkpoint(stage, x, enabled=ckpt)
        return x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, feature_dim)."""
        return self._feature_map(pixel_values).mean(dim=(2, 3))

    def encode_tokens(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features and the last feature map's positions as tokens (B, H'·W', C)."""
        x = self._feature_map(self._input(batch))
        return x.mean(dim=(2, 3)), spatial_tokens(x)


# ------------------------------------------------------------------------------------- ViT
class _PatchEmbedding(nn.Module):
    """Conv patchify + CLS token + learned positions: (B, C, H, W) → (B, 1 + N, D)."""

    def __init__(self, cfg: TinyViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.width, cfg.patch_size, stride=cfg.patch_size)
        n = (cfg.image_size // cfg.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, cfg.width) * 0.02)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.proj(pixel_values).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed


class TinyViT(ImageEncoder):
    """Small ViT. Layer groups: [patch embedding (+CLS, positions), block 0..L-1, final norm]."""

    def __init__(self, cfg: TinyViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _PatchEmbedding(cfg)
        self.patch_dropout = PatchDropout(cfg.patch_keep_ratio, num_prefix_tokens=1)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.feature_dim = cfg.width
        self.token_dim = cfg.width

    def layer_groups(self) -> list[nn.Module]:
        return [self.embed, *self.blocks, self.norm]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, image_size, image_size) → (B, width); patch dropout active in training mode only."""
        return self._pool(self._tokens(pixel_values))

    def encode_tokens(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features and every output token, CLS first (B, 1 + kept patches, width)."""
        tokens = self._tokens(self._input(batch))
        return self._pool(tokens), tokens

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] if self.cfg.pooling == "cls" else x[:, 1:].mean(dim=1)

    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        c, s = self.cfg.in_channels, self.cfg.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (c, s, s):
            raise ValueError(
                f"TinyViT expects pixel_values (B, {c}, {s}, {s}), got {tuple(pixel_values.shape)}"
            )
        x = self.patch_dropout(self.embed(pixel_values))
        ckpt = self.cfg.grad_checkpointing and self.training
        for block in self.blocks:
            x = maybe_checkpoint(block, x, enabled=ckpt)
        if self.cfg.norm == "post":
            x = self.norm(x)
        return x


# ------------------------------------------------------------------------------------ text
class _TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, max_length: int, width: int, dropout: float) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.randn(1, max_length, width) * 0.01)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.tokens.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.tokens(input_ids) + self.positions[:, : input_ids.shape[1]])


class TinyTextTransformer(TextEncoder):
    """Small transformer text encoder. Layer groups: [token+position embedding, blocks..., final norm].

    The tokenizer is loaded from ``cfg.tokenizer`` or trained on a corpus with
    :meth:`train_tokenizer`; token ids must stay below ``cfg.vocab_size``.
    """

    def __init__(self, cfg: TinyTextConfig, assets_dir: Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = _TokenEmbedding(cfg.vocab_size, cfg.max_length, cfg.width, cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.feature_dim = cfg.width
        self.tokenizer: TextTokenizer | None = None
        if assets_dir is not None and any(
            (assets_dir / name).is_file() for name in (TOKENIZER_FILE, "tokenizer_config.json")
        ):
            self._load_saved_tokenizer(assets_dir)
        elif cfg.tokenizer is not None:
            self._set_tokenizer(load_text_tokenizer(cfg.tokenizer, cfg.max_length))

    def _set_tokenizer(self, tokenizer: TextTokenizer) -> None:
        if tokenizer.vocab_size > self.cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but text.vocab_size is {self.cfg.vocab_size}; "
                "raise text.vocab_size"
            )
        self.tokenizer = tokenizer

    def layer_groups(self) -> list[nn.Module]:
        return [self.embed, *self.blocks, self.norm]

    def needs_tokenizer_training(self) -> bool:
        return self.tokenizer is None

    def train_tokenizer(self, texts: Sequence[str]) -> None:
        """Train a WordPiece tokenizer (≤ ``vocab_size`` tokens) on the training corpus."""
        self._set_tokenizer(
            WordPieceTokenizer.train(texts, self.cfg.vocab_size, self.cfg.max_length, self.cfg.lowercase)
        )

    def save_assets(self, directory: Path) -> None:
        if self.tokenizer is not None:
            self.tokenizer.save(directory)

    def _load_saved_tokenizer(self, directory: Path) -> None:
        if (directory / "tokenizer_config.json").is_file():
            self._set_tokenizer(HFTokenizer(directory, self.cfg.max_length))
        elif (directory / TOKENIZER_FILE).is_file():
            self._set_tokenizer(WordPieceTokenizer.from_file(directory / TOKENIZER_FILE, self.cfg.max_length))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.tokenizer is None:
            raise RuntimeError(
                "the tiny text tower has no tokenizer: set text.tokenizer in the model config or call "
                "model.train_tokenizer(train_texts) before encoding text"
            )
        return self.tokenizer(check_texts(texts))

    def forward(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Tokens ``input_ids``/``attention_mask`` (B, T) → pooled features (B, width)."""
        ids = tokens["input_ids"]
        mask = tokens.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        if ids.shape[1] > self.cfg.max_length:
            raise ValueError(f"{ids.shape[1]} tokens exceed text.max_length {self.cfg.max_length}")
        if int(ids.max()) >= self.cfg.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"token id out of range [0, {self.cfg.vocab_size}) in input_ids")
        valid = mask.bool()
        x = self.embed(ids)
        ckpt = self.cfg.grad_checkpointing and self.training
        for block in self.blocks:
            x = maybe_checkpoint(block, x, key_padding_mask=~valid, enabled=ckpt)
        if self.cfg.norm == "post":
            x = self.norm(x)
        return pool_tokens(x, valid, self.cfg.pooling)
