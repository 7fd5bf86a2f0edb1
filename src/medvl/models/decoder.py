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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medvl.config.model import HFDecoderConfig, TinyDecoderConfig
from medvl.config.objective import CAPTION_IGNORE_INDEX as IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "HFCaptionDecoder",
    "TinyCaptionDecoder",
    "build_decoder",
    "caption_targets",
    "frame_captions",
    "generate_ids",
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


def build_decoder(
    cfg: TinyDecoderConfig | HFDecoderConfig, vocab_size: int, image_token_dim: int, assets_dir: Path | None = None
) -> TinyCaptionDecoder | HFCaptionDecoder:
    """The decoder of ``cfg.kind`` over ``vocab_size`` tokens, cross-attending to ``image_token_dim`` tokens."""
    if isinstance(cfg, TinyDecoderConfig):
        return TinyCaptionDecoder(cfg, vocab_size, image_token_dim)
    return HFCaptionDecoder(cfg, vocab_size, image_token_dim, assets_dir)


# --------------------------------------------------------------------------------- generation
GenerationMethod = Literal["greedy", "beam", "sample"]


@torch.no_grad()
def generate_ids(
    decoder: TinyCaptionDecoder | HFCaptionDecoder,
    image_tokens: torch.Tensor,
    *,
    bos: int,
    eos: int,
    vocab_size: int,
    method: GenerationMethod = "greedy",
    max_length: int | None = None,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    no_repeat_ngram: int = 0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Token ids of one caption per image (BOS and EOS removed).

    ``greedy``: the most likely next token; ``beam``: beam search keeping ``num_beams`` hypotheses,
    a finished one scored by ``Σ log p / length**length_penalty`` (length without BOS, EOS counted);
    ``sample``: sampling at ``temperature`` from the ``top_k`` most likely tokens, drawn from
    ``generator`` (so a fixed seed gives fixed captions). Greedy and beam search are deterministic.
    Logits of ids ≥ ``vocab_size`` (unused rows of a larger HF vocabulary) are never chosen.
    ``no_repeat_ngram`` > 0 forbids a token that would repeat an n-gram of that length already in
    the caption (as ``transformers``' ``no_repeat_ngram_size``).
    """
    limit = min(max_length or decoder.max_length, decoder.max_length)
    memory = decoder.image_memory(image_tokens)
    if method == "beam":
        return _beam_search(decoder, memory, bos, eos, vocab_size, limit, num_beams, length_penalty, no_repeat_ngram)
    b = memory.shape[0]
    seqs = torch.full((b, 1), bos, dtype=torch.long, device=memory.device)
    done = torch.zeros(b, dtype=torch.bool, device=memory.device)
    for _ in range(limit - 1):
        logits = _next_logits(decoder, seqs, memory, vocab_size, no_repeat_ngram)
        if method == "greedy":
            nxt = logits.argmax(dim=-1)
        else:
            scaled = logits / max(temperature, 1e-6)
            if top_k is not None:
                kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            probs = scaled.softmax(dim=-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(memory.device)
        nxt = nxt.masked_fill(done, eos)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        done |= nxt == eos
        if bool(done.all()):
            break
    return [_strip(row.tolist(), eos) for row in seqs]


def _next_logits(
    decoder: nn.Module, seqs: torch.Tensor, memory: torch.Tensor, vocab_size: int, no_repeat_ngram: int = 0
) -> torch.Tensor:
    logits = decoder(seqs, torch.ones_like(seqs), memory, memory=memory)[:, -1, :vocab_size].float()
    n = no_repeat_ngram
    if n > 0 and seqs.shape[1] >= n:
        rows = seqs.tolist()
        for r, row in enumerate(rows):
            prefix = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
            banned = {row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i : i + n - 1]) == prefix}
            banned = {b for b in banned if b < vocab_size}
            if banned:
                logits[r, sorted(banned)] = float("-inf")
    return logits


def _strip(ids: list[int], eos: int) -> list[int]:
    body = ids[1:]
    return body[: body.index(eos)] if eos in body else body


def _beam_search(
    decoder: nn.Module, memory: torch.Tensor, bos: int, eos: int, vocab_size: int, limit: int,
    num_beams: int, length_penalty: float, no_repeat_ngram: int = 0,
) -> list[list[int]]:
    b, k = memory.shape[0], num_beams
    mem = memory.repeat_interleave(k, dim=0)  # (B·K, N, W)
    seqs = torch.full((b * k, 1), bos, dtype=torch.long, device=memory.device)
    scores = torch.zeros(b, k, device=memory.device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    for step in range(1, limit):
        logp = _next_logits(decoder, seqs, mem, vocab_size, no_repeat_ngram).log_softmax(dim=-1)  # (B·K, V)
        cand = (scores.reshape(b * k, 1) + logp).reshape(b, k * vocab_size)
        top, idx = cand.topk(2 * k, dim=1)  # room to replace hypotheses that end here
        beam_of, token_of = idx // vocab_size, idx % vocab_size
        new_rows, new_scores = [], torch.full((b, k), float("-inf"), device=memory.device)
        for i in range(b):
            kept = 0
            for j in range(2 * k):
                score = float(top[i, j])
                if score == float("-inf"):
                    break
                row = seqs[i * k + int(beam_of[i, j])]
                tok = int(token_of[i, j])
                if tok == eos or step == limit - 1:
                    body = row.tolist()[1:] + ([] if tok == eos else [tok])
                    finished[i].append((score / (max(len(body), 1) + (tok == eos)) ** length_penalty, body))
                    continue
                new_rows.append(torch.cat([row, row.new_tensor([tok])]))
                new_scores[i, kept] = score
                kept += 1
                if kept == k:
                    break
            while kept < k:  # fewer live candidates than beams: pad with dead copies
                new_rows.append(torch.cat([seqs[i * k], seqs.new_tensor([eos])]))
                kept += 1
        seqs = torch.stack(new_rows)
        scores = new_scores
        best_live = scores.max(dim=1).values
        if all(
            len(finished[i]) >= k
            and max(s for s, _ in finished[i]) >= float(best_live[i]) / max(step, 1) ** length_penalty
            for i in range(b)
        ):
            break
    out = []
    for i in range(b):
        if finished[i]:
            out.append(max(finished[i], key=lambda sb: sb[0])[1])
        else:  # pragma: no cover - the last step always finishes every hypothesis
            out.append(seqs[i * k].tolist()[1:])
    return out
