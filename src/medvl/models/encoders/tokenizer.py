"""Tokenizers for the text towers: a WordPiece tokenizer trained with ``tokenizers``, or any
Hugging Face tokenizer. Both return ``{"input_ids", "attention_mask"}`` LongTensors (B, T) and
save to plain JSON/text files (no pickles).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import torch

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "HFTokenizer",
    "TextTokenizer",
    "WordPieceTokenizer",
    "load_text_tokenizer",
    "train_wordpiece",
]

TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TextTokenizer(Protocol):
    """What a text tower needs from a tokenizer."""

    vocab_size: int
    pad_id: int

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]: ...

    def save(self, directory: Path) -> None: ...

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens, padding or truncation (captioning)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens dropped (WordPiece ``##`` pieces joined)."""
        ...

    def caption_ids(self) -> tuple[int, int, int]:
        """(begin, end, pad) token ids that frame a caption for a decoder."""
        ...


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool = True) -> Tokenizer:
    """Build a BERT-style WordPiece ``tokenizers.Tokenizer`` from the word counts of ``texts``.

    Normalisation: BERT normaliser (unicode clean-up; accents stripped and lowercased when
    ``lowercase``); pre-tokenisation on whitespace and punctuation; template ``[CLS] text [SEP]``.
    Vocabulary: the special tokens, every character seen (as a word start and as a ``##``
    continuation, most frequent first), then whole words by decreasing count, up to
    ``vocab_size``; other words are split greedily into the longest known pieces (WordPiece).
    Ties are broken alphabetically, so the same corpus always gives the same vocabulary.
    (``tokenizers``' ``WordPieceTrainer`` breaks ties in hash order and gives a different
    vocabulary on each call, which would make runs irreproducible.)
    """
    from collections import Counter

    from tokenizers import Tokenizer as _Tokenizer
    from tokenizers import models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        if isinstance(text, str) and text.strip():
            words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    if not words:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size {vocab_size} leaves no room beyond the {len(SPECIAL_TOKENS)} special tokens"
        )
    starts: Counter[str] = Counter()
    continuations: Counter[str] = Counter()
    for word, count in words.items():
        starts[word[0]] += count
        for ch in word[1:]:
            continuations["##" + ch] += count
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}

    def add(counter: Counter[str]) -> None:
        for token, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(vocab) >= vocab_size:
                return
            vocab.setdefault(token, len(vocab))

    add(starts)
    add(continuations)
    add(Counter({w: c for w, c in words.items() if len(w) > 1}))
    tok = _Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return tok


class WordPieceTokenizer:
    """A ``tokenizers.Tokenizer`` padded to the longest text and truncated to ``max_length``."""

    def __init__(self, tokenizer: Tokenizer, max_length: int) -> None:
        self._tok = tokenizer
        self.max_length = max_length
        pad_id = tokenizer.token_to_id("[PAD]")
        self.pad_id = int(pad_id) if pad_id is not None else 0
        self.vocab_size = int(tokenizer.get_vocab_size())
        self._tok.enable_truncation(max_length=max_length)
        self._tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, max_length: int, lowercase: bool = True
    ) -> WordPieceTokenizer:
        return cls(train_wordpiece(texts, vocab_size, lowercase), max_length)

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> WordPieceTokenizer:
        from tokenizers import Tokenizer as _Tokenizer

        return cls(_Tokenizer.from_file(str(path)), max_length)

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encodings = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [[i for i, m in zip(e.ids, e.attention_mask, strict=True) if m] for e in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        from tokenizers import decoders

        special = {self._tok.token_to_id(t) for t in SPECIAL_TOKENS} - {None}
        tokens = [self._tok.id_to_token(int(i)) for i in ids if int(i) not in special]
        return str(decoders.WordPiece(prefix="##").decode([t for t in tokens if t is not None]))

    def caption_ids(self) -> tuple[int, int, int]:
        bos, eos = self._tok.token_to_id("[CLS]"), self._tok.token_to_id("[SEP]")
        if bos is None or eos is None:
            raise ValueError("this tokenizer has no [CLS]/[SEP] tokens to begin and end captions")
        return int(bos), int(eos), self.pad_id

    def save(self, directory: Path) -> None:
        from medvl.utils.io import atomic_write_text

        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / TOKENIZER_FILE, self._tok.to_str())


class HFTokenizer:
    """A ``transformers`` tokenizer (``AutoTokenizer``) with fixed truncation and padding."""

    def __init__(
        self,
        name_or_path: str | Path,
        max_length: int | None,
        padding: Literal["longest", "max_length"] = "longest",
        revision: str | None = None,
        lowercase: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoTokenizer

        kwargs: dict[str, object] = {"trust_remote_code": bool(trust_remote_code)}
        if revision is not None:
            kwargs["revision"] = revision
        if lowercase is not None:
            kwargs["do_lower_case"] = lowercase
        self._tok = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
        model_max = getattr(self._tok, "model_max_length", None)
        if max_length is None:
            if not isinstance(model_max, int) or model_max > 100_000:
                raise ValueError(
                    f"tokenizer {name_or_path} states no usable model_max_length; set max_length in the text config"
                )
            max_length = model_max
        self.max_length = int(max_length)
        self.padding = padding
        pad = self._tok.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.vocab_size = len(self._tok)

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self._tok(
            list(texts),
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        out = {"input_ids": enc["input_ids"].long()}
        if "attention_mask" in enc:
            out["attention_mask"] = enc["attention_mask"].long()
        else:  # e.g. SigLIP tokenizers return no mask; every position is attended
            out["attention_mask"] = torch.ones_like(out["input_ids"])
        return out

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(map(int, ids)) for ids in self._tok(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=True)).strip()

    def caption_ids(self) -> tuple[int, int, int]:
        tok = self._tok
        bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        if bos is None or eos is None:
            raise ValueError(f"tokenizer {type(tok).__name__} has neither CLS/SEP nor BOS/EOS tokens to frame captions")
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        return int(bos), int(eos), int(pad)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._tok.save_pretrained(str(directory))


def load_text_tokenizer(spec: str | Path, max_length: int) -> TextTokenizer:
    """A ``tokenizer.json`` file / a directory with only one → WordPiece-style ``tokenizers``
    tokenizer; any other directory or hub id → ``AutoTokenizer``."""
    path = Path(spec)
    if path.is_file():
        return WordPieceTokenizer.from_file(path, max_length)
    if path.is_dir() and (path / TOKENIZER_FILE).is_file() and not (path / "tokenizer_config.json").is_file():
        return WordPieceTokenizer.from_file(path / TOKENIZER_FILE, max_length)
    return HFTokenizer(spec, max_length)
