"""Caption generation with a CoCa decoder: greedy, beam search and seeded sampling.

Every method decodes incrementally by default: the decoder's :class:`~medvl.models.decoder.DecoderState`
keeps the keys/values of the tokens decoded so far, so each new token costs one position's work
instead of re-running the whole prefix (``use_cache=False`` re-runs it, the reference the cached path
is pinned against). Both paths give the same captions.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import torch

from medvl.models.decoder import CaptionDecoder, DecoderState

__all__ = ["GenerationMethod", "GenerationOptions", "generate_ids"]

GenerationMethod = Literal["greedy", "beam", "sample"]


class GenerationOptions(TypedDict, total=False):
    """The decoding settings of :func:`generate_ids` (its defaults apply to those left out), as
    callers such as :meth:`medvl.models.DualEncoder.generate` pass them on."""

    method: GenerationMethod
    max_length: int | None
    num_beams: int
    length_penalty: float
    temperature: float
    top_k: int | None
    no_repeat_ngram: int
    use_cache: bool


class _Prefix:
    """The decoded prefixes (B, t) and, with ``use_cache``, the decoder's cache over them."""

    def __init__(self, decoder: CaptionDecoder, memory: torch.Tensor, bos: int, use_cache: bool) -> None:
        self.decoder, self.memory = decoder, memory
        self.seqs = torch.full((memory.shape[0], 1), bos, dtype=torch.long, device=memory.device)
        self.state: DecoderState | None = decoder.start(memory) if use_cache else None
        self._fed = 0  # tokens of seqs the cache has seen

    def next_logits(self, vocab_size: int, no_repeat_ngram: int) -> torch.Tensor:
        """Float logits (B, vocab_size) of the token after each prefix."""
        if self.state is None:
            out = self.decoder(self.seqs, torch.ones_like(self.seqs), self.memory, memory=self.memory)
        else:
            out = self.decoder.step(self.seqs[:, self._fed :], self.state)
            self._fed = self.seqs.shape[1]
        logits = out[:, -1, :vocab_size].float()
        return _block_repeats(logits, self.seqs, no_repeat_ngram, vocab_size)

    def select(self, rows: torch.Tensor) -> None:
        """Keep prefixes ``rows`` (B',), in that order, with their memory and cache."""
        self.seqs = self.seqs.index_select(0, rows)
        self.memory = self.memory.index_select(0, rows)
        if self.state is not None:
            self.state.reorder(rows)

    def extend(self, tokens: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Append ``tokens`` (B',) to prefixes ``rows`` (all, in order, when None)."""
        if rows is not None:
            self.select(rows)
        self.seqs = torch.cat([self.seqs, tokens[:, None]], dim=1)


def _block_repeats(logits: torch.Tensor, seqs: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """Forbid tokens that would repeat an n-gram already in the prefix (``no_repeat_ngram_size``)."""
    if n > 0 and seqs.shape[1] >= n:
        for r, row in enumerate(seqs.tolist()):
            prefix = tuple(row[len(row) - n + 1 :]) if n > 1 else ()
            banned = {row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i : i + n - 1]) == prefix}
            banned = {b for b in banned if b < vocab_size}
            if banned:
                logits[r, sorted(banned)] = float("-inf")
    return logits


@torch.no_grad()
def generate_ids(
    decoder: CaptionDecoder,
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
    use_cache: bool = True,
) -> list[list[int]]:
    """Token ids of one caption per image (BOS and EOS removed).

    ``greedy``: the most likely next token; ``beam``: beam search keeping ``num_beams`` hypotheses,
    a finished one scored by ``Σ log p / length**length_penalty`` (length without BOS, EOS counted);
    ``sample``: sampling at ``temperature`` from the ``top_k`` most likely tokens, drawn from
    ``generator`` (so a fixed seed gives fixed captions). Greedy and beam search are deterministic.
    Logits of ids ≥ ``vocab_size`` (unused rows of a larger HF vocabulary) are never chosen.
    ``no_repeat_ngram`` > 0 forbids a token that would repeat an n-gram of that length already in
    the caption (as ``transformers``' ``no_repeat_ngram_size``). ``use_cache`` decodes incrementally
    (see the module docstring); the captions are the same either way.
    """
    limit = min(max_length or decoder.max_length, decoder.max_length)
    memory = decoder.image_memory(image_tokens)
    prefix = _Prefix(decoder, memory, bos, use_cache)
    if method == "beam":
        return _beam_search(prefix, eos, vocab_size, limit, num_beams, length_penalty, no_repeat_ngram)
    done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
    for _ in range(limit - 1):
        logits = prefix.next_logits(vocab_size, no_repeat_ngram)
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
        prefix.extend(nxt)
        done |= nxt == eos
        if bool(done.all()):
            break
    return [_strip(row.tolist(), eos) for row in prefix.seqs]


def _strip(ids: list[int], eos: int) -> list[int]:
    body = ids[1:]
    return body[: body.index(eos)] if eos in body else body


def _beam_search(
    prefix: _Prefix, eos: int, vocab_size: int, limit: int, num_beams: int, length_penalty: float,
    no_repeat_ngram: int = 0,
) -> list[list[int]]:
    b, k = prefix.memory.shape[0], num_beams
    device = prefix.memory.device
    prefix.select(torch.arange(b, device=device).repeat_interleave(k))  # (B·K,): every image's K beams
    scores = torch.zeros(b, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    for step in range(1, limit):
        logp = prefix.next_logits(vocab_size, no_repeat_ngram).log_softmax(dim=-1)  # (B·K, V)
        cand = (scores.reshape(b * k, 1) + logp).reshape(b, k * vocab_size)
        top, idx = cand.topk(2 * k, dim=1)  # room to replace hypotheses that end here
        beam_of, token_of = idx // vocab_size, idx % vocab_size
        rows: list[int] = []
        tokens: list[int] = []
        new_scores = torch.full((b, k), float("-inf"), device=device)
        for i in range(b):
            kept = 0
            for j in range(2 * k):
                score = float(top[i, j])
                if score == float("-inf"):
                    break
                row = i * k + int(beam_of[i, j])
                tok = int(token_of[i, j])
                if tok == eos or step == limit - 1:
                    body = prefix.seqs[row].tolist()[1:] + ([] if tok == eos else [tok])
                    finished[i].append((score / (max(len(body), 1) + (tok == eos)) ** length_penalty, body))
                    continue
                rows.append(row)
                tokens.append(tok)
                new_scores[i, kept] = score
                kept += 1
                if kept == k:
                    break
            while kept < k:  # fewer live candidates than beams: pad with dead copies
                rows.append(i * k)
                tokens.append(eos)
                kept += 1
        prefix.extend(torch.tensor(tokens, device=device), torch.tensor(rows, device=device))
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
            out.append(prefix.seqs[i * k].tolist()[1:])
    return out
