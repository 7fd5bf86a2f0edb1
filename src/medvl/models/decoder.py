"""CoCa's captioning decoder (Yu et al. 2022) and caption generation (greedy, beam search, sampling).

:class:`TinyCaptionDecoder` is the built-in decoder: token + position embeddings →
``unimodal_layers`` causal self-attention blocks (text only) → ``multimodal_layers`` blocks that
add cross-attention to the image tower's token outputs → LayerNorm → language-model head.
:class:`HFCaptionDecoder` wraps a Hugging Face causal LM loaded with cross-attention. Both map
``(input_ids (B, T), attention_mask (B, T), image_tokens (B, N, F)) → logits (B, T, V)``.

The decoder's unimodal layers are its own, not the contrastive text tower's: medvl's text towers
are bidirectional encoders (BERT family, the tiny text tower), whose token states see future
tokens and cannot feed an autoregressive decoder. CoCa shares them; here the contrastive text
embedding comes from the text tower as for every other method.

Captions are framed as ``[BOS] tokens [EOS]`` with the text tower's tokenizer (BERT-style
tokenizers: ``[CLS]``/``[SEP]``); :func:`caption_targets` turns them into decoder inputs and
next-token labels with padding set to ``IGNORE_INDEX``.

Incremental decoding (what :mod:`medvl.models.generation` uses): ``start(memory)`` returns a
:class:`DecoderState` and ``step(new_ids, state)`` the logits (B, t_new, V) of the new positions,
keeping every layer's self-attention keys/values (and, once computed, the cross-attention
keys/values of the image memory) in the state, so a step costs O(t) instead of re-running the
O(t²) prefix. ``state.reorder(rows)`` follows beam search's choice of hypotheses. The logits
equal those of ``forward`` on the whole prefix (pinned in ``tests/models/test_decoder_cache.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medvl.config.model import HFDecoderConfig, TinyDecoderConfig
from medvl.config.objective import CAPTION_IGNORE_INDEX as IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "CaptionDecoder",
    "DecoderState",
    "HFCaptionDecoder",
    "TinyCaptionDecoder",
    "build_decoder",
    "caption_targets",
    "frame_captions",
]


def frame_captions(
    ids: Sequence[Sequence[int]], bos: int, eos: int, pad: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[BOS] ids [EOS]`` per caption, truncated to ``max_length`` tokens (EOS kept), right-padded.

    Returns ``input_ids`` and ``attention_mask`` LongTensors (B, T) with T the longest framed caption.
    """
    rows = [[bos, *list(seq)[: max_length - 2], eos] for seq in ids]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids, mask


def caption_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher forcing: decoder inputs ``ids[:, :-1]`` (+ mask) and labels ``ids[:, 1:]`` with every
    padding position set to :data:`IGNORE_INDEX`."""
    labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
    return input_ids[:, :-1], attention_mask[:, :-1], labels


def _causal_mask(t: int, device: torch.device) -> torch.Tensor:
    return torch.triu(torch.ones(t, t, dtype=torch.bool, device=device), diagonal=1)


class DecoderState:
    """Keys/values cached by incremental decoding: per layer ``(k, v)`` of the self-attention over the
    tokens decoded so far (B, heads, t, head_dim) and of the cross-attention over the image memory.
    ``length`` = tokens decoded so far. (The HF decoder keeps its ``past_key_values`` in ``cache``.)"""

    def __init__(self, memory: torch.Tensor) -> None:
        self.memory = memory
        self.length = 0
        self.self_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self.cross_kv: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self.cache: Any = None

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows ``rows`` (LongTensor (B',)) of every cached tensor, in that order (beam search)."""
        self.memory = self.memory.index_select(0, rows)
        self.self_kv = [None if kv is None else (kv[0].index_select(0, rows), kv[1].index_select(0, rows))
                        for kv in self.self_kv]
        self.cross_kv = [None if kv is None else (kv[0].index_select(0, rows), kv[1].index_select(0, rows))
                         for kv in self.cross_kv]
        if self.cache is not None:
            self.cache.reorder_cache(rows)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, w = x.shape
    return x.view(b, t, heads, w // heads).transpose(1, 2)


def _in_projection(attn: nn.MultiheadAttention, x: torch.Tensor, part: slice) -> torch.Tensor:
    """Rows ``part`` of ``attn``'s packed q/k/v input projection applied to ``x`` (B, T, W)."""
    weight = attn.in_proj_weight[part]
    bias = attn.in_proj_bias[part] if attn.in_proj_bias is not None else None
    return F.linear(x, weight, bias)


def _cached_attention(
    attn: nn.MultiheadAttention, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``attn`` (eval mode) of ``query`` (B, t, W) over projected keys/values (B, heads, T, head_dim);
    ``mask`` (t, T) is True where attending is allowed."""
    w, heads = attn.embed_dim, attn.num_heads
    q = _split_heads(_in_projection(attn, query, slice(0, w)), heads)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    b, _, t, _ = out.shape
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, w))


class _DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention, optional cross-attention to image tokens, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, cross: bool) -> None:
        super().__init__()
        hidden = max(1, round(width * mlp_ratio))
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(width) if cross else None
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True) if cross else None
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        if self.cross_attn is not None and self.norm_cross is not None:
            assert image is not None
            h = self.norm_cross(x)
            x = x + self.cross_attn(h, image, image, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))

    def step(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None,
        image: torch.Tensor | None, cross: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
        """``forward`` for new tokens ``x`` (B, t, W) given the cached keys/values ``past`` of the tokens
        before them; returns the new hidden states, the extended self-attention cache and the
        cross-attention keys/values of the image memory (computed on the first step, then reused)."""
        w, heads = self.self_attn.embed_dim, self.self_attn.num_heads
        h = self.norm1(x)
        k = _split_heads(_in_projection(self.self_attn, h, slice(w, 2 * w)), heads)
        v = _split_heads(_in_projection(self.self_attn, h, slice(2 * w, 3 * w)), heads)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + _cached_attention(self.self_attn, h, k, v, mask)
        if self.cross_attn is not None and self.norm_cross is not None:
            if cross is None:
                assert image is not None
                cross = (_split_heads(_in_projection(self.cross_attn, image, slice(w, 2 * w)), heads),
                         _split_heads(_in_projection(self.cross_attn, image, slice(2 * w, 3 * w)), heads))
            x = x + _cached_attention(self.cross_attn, self.norm_cross(x), cross[0], cross[1], None)
        return x + self.mlp(self.norm2(x)), (k, v), cross


class _AttentionalPooler(nn.Module):
    """CoCa's attentional pooler: ``n`` learned queries cross-attend over the image tokens."""

    def __init__(self, width: int, heads: int, n_queries: int) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, n_queries, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm(tokens)
        q = self.queries.expand(tokens.shape[0], -1, -1)
        return self.attn(q, kv, kv, need_weights=False)[0]


class TinyCaptionDecoder(nn.Module):
    """The built-in CoCa decoder (see the module docstring). Logits (B, T, vocab_size)."""

    def __init__(self, cfg: TinyDecoderConfig, vocab_size: int, image_token_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_length = cfg.max_length
        w = cfg.width
        self.tokens = nn.Embedding(vocab_size, w)
        self.positions = nn.Parameter(torch.randn(1, cfg.max_length, w) * 0.01)
        nn.init.normal_(self.tokens.weight, std=0.02)
        self.image_proj = nn.Sequential(nn.Linear(image_token_dim, w), nn.LayerNorm(w))
        self.pooler = _AttentionalPooler(w, cfg.heads, cfg.image_queries) if cfg.image_queries else None
        self.unimodal = nn.ModuleList(
            _DecoderBlock(w, cfg.heads, cfg.mlp_ratio, cfg.dropout, cross=False) for _ in range(cfg.unimodal_layers)
        )
        self.multimodal = nn.ModuleList(
            _DecoderBlock(w, cfg.heads, cfg.mlp_ratio, cfg.dropout, cross=True) for _ in range(cfg.multimodal_layers)
        )
        self.norm = nn.LayerNorm(w)
        self.lm_head = nn.Linear(w, vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tokens.weight

    def image_memory(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, N, F) → what the multimodal layers attend to (B, N or queries, width)."""
        memory = self.image_proj(image_tokens)
        return self.pooler(memory) if self.pooler is not None else memory

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_tokens: torch.Tensor,
        *, memory: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.max_length:
            raise ValueError(f"{t} caption tokens exceed decoder.max_length {self.max_length}")
        x = self.tokens(input_ids) + self.positions[:, :t]
        causal = _causal_mask(t, x.device)
        for block in self.unimodal:
            x = block(x, causal, None)
        image = memory if memory is not None else self.image_memory(image_tokens)
        for block in self.multimodal:
            x = block(x, causal, image)
        return self.lm_head(self.norm(x))

    def start(self, memory: torch.Tensor) -> DecoderState:
        """An empty decoding state over ``memory`` (B, N, width) from :meth:`image_memory`."""
        state = DecoderState(memory)
        state.self_kv = [None] * (len(self.unimodal) + len(self.multimodal))
        state.cross_kv = [None] * len(self.multimodal)
        return state

    def step(self, input_ids: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Logits (B, t, V) of ``input_ids`` (B, t), the tokens following the ``state.length`` tokens
        already decoded (equal to ``forward`` on the whole prefix); ``state`` is updated in place."""
        t, start = input_ids.shape[1], state.length
        if start + t > self.max_length:
            raise ValueError(f"{start + t} caption tokens exceed decoder.max_length {self.max_length}")
        x = self.tokens(input_ids) + self.positions[:, start : start + t]
        mask = None
        if t > 1:  # new token i sees every cached token and new tokens up to i
            keys = torch.arange(start + t, device=x.device)
            mask = keys[None, :] <= (start + torch.arange(t, device=x.device))[:, None]
        for i, block in enumerate([*self.unimodal, *self.multimodal]):
            j = i - len(self.unimodal)
            cross = state.cross_kv[j] if j >= 0 else None
            x, state.self_kv[i], cross = block.step(x, state.self_kv[i], mask, state.memory if j >= 0 else None, cross)
            if j >= 0:
                state.cross_kv[j] = cross
        state.length = start + t
        return self.lm_head(self.norm(x))


class HFCaptionDecoder(nn.Module):
    """A Hugging Face causal LM with cross-attention as the decoder (see :class:`HFDecoderConfig`)."""

    def __init__(self, cfg: HFDecoderConfig, vocab_size: int, image_token_dim: int, assets_dir: Path | None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM

        self.cfg = cfg
        self.max_length = cfg.max_length
        source = str(assets_dir) if assets_dir is not None else cfg.name_or_path
        kwargs: dict[str, Any] = {"is_decoder": True, "add_cross_attention": True}
        if cfg.revision is not None and assets_dir is None:
            kwargs["revision"] = cfg.revision
        config = AutoConfig.from_pretrained(source, **kwargs)
        if cfg.pretrained and assets_dir is None:
            self.model = AutoModelForCausalLM.from_pretrained(source, config=config)
        else:
            self.model = AutoModelForCausalLM.from_config(config)
        embeddings: Any = self.model.get_input_embeddings()
        n_vocab = int(embeddings.weight.shape[0])
        if n_vocab < vocab_size:
            raise ValueError(
                f"decoder {cfg.name_or_path}: its vocabulary has {n_vocab} tokens but the text tower's tokenizer "
                f"has {vocab_size}; the decoder must share the text tower's token ids"
            )
        hidden = int(getattr(config, "hidden_size", getattr(config, "n_embd", 0)))
        self.image_proj = nn.Linear(image_token_dim, hidden)

    def image_memory(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.image_proj(image_tokens)

    def save_assets(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(directory))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_tokens: torch.Tensor,
        *, memory: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image = memory if memory is not None else self.image_memory(image_tokens)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image,
                         return_dict=True)
        return out.logits

    def start(self, memory: torch.Tensor) -> DecoderState:
        """An empty decoding state over ``memory`` (B, N, hidden) from :meth:`image_memory`."""
        return DecoderState(memory)

    def step(self, input_ids: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Logits (B, t, V) of the tokens after the ``state.length`` decoded ones, with the model's own
        ``past_key_values`` (``use_cache``)."""
        t = input_ids.shape[1]
        mask = torch.ones(input_ids.shape[0], state.length + t, dtype=torch.long, device=input_ids.device)
        out = self.model(input_ids=input_ids, attention_mask=mask, encoder_hidden_states=state.memory,
                         past_key_values=state.cache, use_cache=True, return_dict=True)
        state.cache = out.past_key_values
        state.length += t
        return out.logits


CaptionDecoder = TinyCaptionDecoder | HFCaptionDecoder


def build_decoder(
    cfg: TinyDecoderConfig | HFDecoderConfig, vocab_size: int, image_token_dim: int, assets_dir: Path | None = None
) -> CaptionDecoder:
    """The decoder of ``cfg.kind`` over ``vocab_size`` tokens, cross-attending to ``image_token_dim`` tokens."""
    if isinstance(cfg, TinyDecoderConfig):
        return TinyCaptionDecoder(cfg, vocab_size, image_token_dim)
    return HFCaptionDecoder(cfg, vocab_size, image_token_dim, assets_dir)
