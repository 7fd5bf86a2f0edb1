"""Incremental decoding: the key/value cache gives the logits and captions of the uncached path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.models._coca_models import make_batch, tiny_coca

from medvl.models import DualEncoder
from medvl.models.generation import generate_ids


def _decoder_inputs(model: DualEncoder, n: int = 3, t: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    _, tokens = model.vision.encode_tokens(make_batch(n))
    assert model.decoder is not None
    memory = model.decoder.image_memory(tokens)
    ids = torch.randint(0, 90, (n, t), generator=torch.Generator().manual_seed(5))
    return ids, memory


def _hf_model(family: str, tmp_path: Path, width: int = 16) -> DualEncoder:
    transformers = pytest.importorskip("transformers")
    if family == "bert":
        config = transformers.BertConfig(vocab_size=128, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=64)
    else:
        config = transformers.GPT2Config(vocab_size=128, n_embd=width, n_layer=2, n_head=2, n_positions=64)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / family)
    return tiny_coca(decoder={"kind": "hf", "name_or_path": str(tmp_path / family), "max_length": 40}).eval()


_BUILT: dict[str, DualEncoder] = {}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf_decoders")


def _model(name: str, tmp_path: Path) -> DualEncoder:
    """The named CoCa model in eval mode, built once per test session (generation never changes it)."""
    if name not in _BUILT:
        _BUILT[name] = _build(name, tmp_path)
    return _BUILT[name]


def _build(name: str, tmp_path: Path) -> DualEncoder:
    if name == "tiny":
        return tiny_coca(decoder={"kind": "tiny", "width": 16, "heads": 2, "unimodal_layers": 2,
                                  "multimodal_layers": 2, "max_length": 40}).eval()
    if name == "tiny_pooler":
        return tiny_coca(decoder={"kind": "tiny", "width": 16, "heads": 4, "unimodal_layers": 0,
                                  "multimodal_layers": 2, "max_length": 40, "image_queries": 5}).eval()
    return _hf_model(name, tmp_path)


@pytest.mark.parametrize("name", ["tiny", "tiny_pooler", "gpt2", "bert"])
def test_step_logits_equal_the_full_forward(name: str, hf_dir: Path) -> None:
    model = _model(name, hf_dir)
    decoder = model.decoder
    assert decoder is not None
    ids, memory = _decoder_inputs(model)
    with torch.no_grad():
        full = decoder(ids, torch.ones_like(ids), memory, memory=memory)
        state = decoder.start(memory)
        chunks = [decoder.step(ids[:, :4], state)]  # a prompt of 4 tokens at once, then one at a time
        chunks += [decoder.step(ids[:, i : i + 1], state) for i in range(4, ids.shape[1])]
    assert state.length == ids.shape[1]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=1e-5, atol=1e-5)


def test_reorder_follows_the_chosen_rows(hf_dir: Path) -> None:
    model = _model("tiny", hf_dir)
    decoder = model.decoder
    assert decoder is not None
    ids, memory = _decoder_inputs(model)
    rows = torch.tensor([2, 0, 0])
    with torch.no_grad():
        state = decoder.start(memory)
        decoder.step(ids[:, :5], state)
        state.reorder(rows)
        cached = decoder.step(ids[rows, 5:6], state)
        direct = decoder(ids[rows, :6], torch.ones(3, 6, dtype=torch.long), memory[rows], memory=memory[rows])
    torch.testing.assert_close(cached[:, 0], direct[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "method"), [
    ("tiny", "greedy"), ("tiny", "beam"), ("tiny", "sample"), ("tiny_pooler", "beam"), ("gpt2", "beam"),
    ("bert", "greedy"),
])
def test_cached_generation_equals_uncached(name: str, method: str, hf_dir: Path) -> None:
    model = _model(name, hf_dir)
    assert model.decoder is not None and model.text is not None
    tok = model.text.tokenizer  # type: ignore[attr-defined]
    bos, eos, _ = tok.caption_ids()
    _, tokens = model.vision.encode_tokens(make_batch(3))
    # the real EOS (captions of different lengths), then an EOS the model never emits (30-token captions)
    for end in (eos, tok.vocab_size):
        runs = [generate_ids(model.decoder, tokens, bos=bos, eos=end, vocab_size=tok.vocab_size, method=method,
                             max_length=24, num_beams=3, no_repeat_ngram=3 if name == "tiny" else 0,
                             generator=torch.Generator().manual_seed(7), use_cache=use_cache)
                for use_cache in (True, False)]
        assert runs[0] == runs[1]
    assert min(len(r) for r in runs[0]) == 23  # every step decoded with the cache
