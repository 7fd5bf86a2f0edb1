"""CoCa: decoder outputs, the caption loss against token cross-entropy written out, generation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tests.models._coca_models import CORPUS, make_batch, tiny_coca

from medvl.config.model import ModelConfig
from medvl.models import DualEncoder
from medvl.objectives import build_objective, caption_loss


def _direct_token_ce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y == -100:
                continue
            row = logits[b, t].double()
            total += -(float(row[y]) - math.log(float(row.exp().sum())))
            count += 1
    return total / count


def test_caption_loss_equals_token_cross_entropy_and_ignores_padding() -> None:
    model = tiny_coca()
    model.eval()
    batch = make_batch()
    out = model(batch)
    logits, labels = out["caption_logits"], out["caption_labels"]
    lengths = (labels != -100).sum(dim=1)
    assert len(set(lengths.tolist())) > 1  # captions of different lengths: some rows are padded
    objective = build_objective({"terms": [{"name": "cap", "kind": "caption"}]})
    value = objective(out, batch)["cap"]
    assert float(value.detach()) == pytest.approx(_direct_token_ce(logits.detach(), labels), rel=1e-5)
    # whatever the logits at padded positions, the loss is the same
    noisy = logits.detach().clone()
    noisy[labels == -100] = torch.randn_like(noisy[labels == -100]) * 50
    assert float(caption_loss(noisy, labels)) == pytest.approx(float(value.detach()), rel=1e-6)
    # labels are the framed caption shifted by one: [CLS] w1 … wn [SEP] → w1 … wn [SEP]
    ids, mask = model.caption_tokens(CORPUS[:1])
    assert labels[0, : int(lengths[0])].tolist() == ids[0, 1 : int(mask[0].sum())].tolist()


def test_label_smoothing_matches_its_definition() -> None:
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[1, 2, 3, -100, -100], [0, 6, 5, 4, 2]])
    eps = 0.1
    logp = logits.log_softmax(-1)
    valid = labels != -100
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    smooth = -logp.mean(-1)
    expected = ((1 - eps) * nll + eps * smooth)[valid].mean()
    assert float(caption_loss(logits, labels, label_smoothing=eps)) == pytest.approx(float(expected), rel=1e-5)


def test_caption_composes_with_clip_by_weight() -> None:
    model = tiny_coca()
    batch = make_batch()
    out = model(batch)
    objective = build_objective({"balance": 0.25, "terms": [{"name": "clip", "kind": "clip"},
                                                            {"name": "cap", "kind": "caption"}]})
    losses = objective(out, batch)
    assert float(losses["total"]) == pytest.approx(0.25 * float(losses["clip"]) + 0.75 * float(losses["cap"]), rel=1e-6)
    losses["total"].backward()
    assert model.decoder is not None
    assert all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)


def test_evaluation_batches_without_texts_skip_the_decoder() -> None:
    model = tiny_coca()
    out = model({"pixel_values": torch.randn(2, 1, 16, 16)})
    assert "caption_logits" not in out


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_generation_is_deterministic(method: str) -> None:
    model = tiny_coca()
    images = make_batch()["pixel_values"]
    first = model.generate(images, method=method, seed=3, max_length=12)  # type: ignore[arg-type]
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    assert model.generate(images, method=method, seed=3, max_length=12) == first  # type: ignore[arg-type]
    assert model.training  # mode restored


def test_beam_of_one_is_greedy_and_beams_score_at_least_as_high() -> None:
    model = tiny_coca()
    images = make_batch()["pixel_values"]
    greedy = model.generate(images, method="greedy", max_length=10)  # type: ignore[arg-type]
    assert model.generate(images, method="beam", num_beams=1, max_length=10, length_penalty=0.0) == greedy  # type: ignore[arg-type]


def test_tiny_cnn_tokens_and_roundtrip(tmp_path: Path) -> None:
    model = tiny_coca(vision={"kind": "tiny_cnn", "in_channels": 1, "widths": [8, 16]})
    model.eval()
    batch = make_batch()
    before = model(batch)["caption_logits"]
    model.save_pretrained(tmp_path / "m")
    again = DualEncoder.from_pretrained(tmp_path / "m").eval()
    assert torch.allclose(again(batch)["caption_logits"], before, atol=1e-6)


def test_decoder_needs_a_text_tower_and_image_tokens() -> None:
    with pytest.raises(ValueError, match="text tower"):
        ModelConfig.model_validate({"text": None, "decoder": {"kind": "tiny"}})


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_hugging_face_decoder_with_cross_attention(family: str, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    if family == "bert":
        config = transformers.BertConfig(vocab_size=128, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=32)
    else:
        config = transformers.GPT2Config(vocab_size=128, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    model_dir = tmp_path / family
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    model = tiny_coca(decoder={"kind": "hf", "name_or_path": str(model_dir), "max_length": 24})
    model.eval()
    batch = make_batch()
    logits = model(batch)["caption_logits"]
    assert logits.shape[:2] == model(batch)["caption_labels"].shape and logits.shape[-1] == 128
    assert len(model.generate(batch["pixel_values"], max_length=6)) == 3  # type: ignore[arg-type]
    model.save_pretrained(tmp_path / "saved")
    again = DualEncoder.from_pretrained(tmp_path / "saved").eval()
    assert torch.allclose(again(batch)["caption_logits"], logits, atol=1e-5)


def test_hugging_face_decoder_vocabulary_must_cover_the_tokenizer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="vocabulary"):
        tiny_coca(decoder={"kind": "hf", "name_or_path": str(tmp_path / "small")})


def test_no_repeat_ngram_blocks_repeated_bigrams() -> None:
    from medvl.models.generation import generate_ids

    model = tiny_coca().eval()
    _, tokens = model.vision.encode_tokens(make_batch())
    tok = model.text.tokenizer  # type: ignore[union-attr]
    bos, eos, _ = tok.caption_ids()
    assert model.decoder is not None
    for method in ("greedy", "beam"):
        rows = generate_ids(model.decoder, tokens, bos=bos, eos=eos, vocab_size=tok.vocab_size, method=method,  # type: ignore[arg-type]
                            max_length=20, no_repeat_ngram=2)
        for ids in rows:
            pairs = list(zip([bos, *ids], ids, strict=False))
            assert len(pairs) == len(set(pairs)), ids
