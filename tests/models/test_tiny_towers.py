"""Built-in towers: tiny ViT with FLIP patch dropout, CNN, text transformer and tokenizers,
slide bag encoder, masked/augmented views."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvl.config.loading import config_from_dict
from medvl.config.model import ModelConfig, SlideEncoderConfig, TinyTextConfig, TinyViTConfig
from medvl.models import build_model
from medvl.models.encoders.patch_dropout import PatchDropout
from medvl.models.encoders.slide import SlideEncoder
from medvl.models.encoders.tiny import TinyTextTransformer, TinyViT
from medvl.models.encoders.tokenizer import WordPieceTokenizer
from medvl.models.masking import mask_bag_instances, mask_image_patches

CORPUS = ["left pleural effusion", "no acute process", "mild cardiomegaly", "right lobe consolidation"] * 3


def tokens_seen_by_first_block(vit: TinyViT, x: torch.Tensor) -> int:
    seen: list[int] = []
    handle = vit.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    vit(x)
    handle.remove()
    return seen[0]


def test_patch_dropout_training_only() -> None:
    vit = TinyViT(
        TinyViTConfig(image_size=16, patch_size=4, width=16, heads=2, depth=1, patch_keep_ratio=0.5)
    )
    x = torch.randn(2, 3, 16, 16)
    vit.train()
    assert tokens_seen_by_first_block(vit, x) == 1 + 8  # CLS + round(0.5 · 16) patches (FLIP)
    vit.eval()
    assert tokens_seen_by_first_block(vit, x) == 1 + 16  # inference sees every patch (open_clip #758)
    torch.testing.assert_close(vit(x), vit(x))


def test_patch_dropout_keeps_prefix_and_order() -> None:
    drop = PatchDropout(keep_ratio=0.25, num_prefix_tokens=2)
    tokens = torch.arange(2 * 10, dtype=torch.float32).view(1, 10, 2).repeat(3, 1, 1)  # token i = [2i, 2i+1]
    out = drop.train()(tokens)
    assert out.shape == (3, 2 + 2, 2)  # round(0.25 · 8) = 2 patches kept
    torch.testing.assert_close(out[:, :2], tokens[:, :2])
    ids = out[:, 2:, 0] / 2
    assert torch.all(ids[:, 1:] > ids[:, :1])  # spatial order preserved
    assert torch.all(ids >= 2)
    assert PatchDropout(0.01).num_kept(16) == 1
    with pytest.raises(ValueError, match="keep_ratio"):
        PatchDropout(0.0)


def test_tiny_vit_pooling_variants_and_bad_shape() -> None:
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(0)
    post = TinyViT(TinyViTConfig(image_size=16, patch_size=4, width=16, heads=2, depth=1)).eval()
    pre = TinyViT(TinyViTConfig(image_size=16, patch_size=4, width=16, heads=2, depth=1, norm="pre")).eval()
    pre.load_state_dict(post.state_dict())
    torch.testing.assert_close(post.norm(pre(x)), post(x))  # pre-norm CLS then LN = post-norm CLS
    with pytest.raises(ValueError, match=r"TinyViT expects pixel_values \(B, 3, 16, 16\)"):
        post(torch.randn(2, 3, 8, 8))


def test_text_padding_does_not_change_features() -> None:
    tower = TinyTextTransformer(
        TinyTextConfig(vocab_size=64, width=16, heads=2, depth=2, max_length=16)
    ).eval()
    tower.train_tokenizer(CORPUS)
    alone = tower(tower.tokenize(["mild cardiomegaly"]))
    batch = tower(tower.tokenize(["mild cardiomegaly", "left pleural effusion no acute process right lobe"]))
    torch.testing.assert_close(batch[:1], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cls", "eos"])
def test_text_pooling_shapes(pooling: str) -> None:
    tower = TinyTextTransformer(TinyTextConfig(vocab_size=64, width=16, heads=2, depth=1, pooling=pooling))  # type: ignore[arg-type]
    tower.train_tokenizer(CORPUS)
    assert tower(tower.tokenize(CORPUS[:3])).shape == (3, 16)


def test_wordpiece_tokenizer_roundtrip_and_limits(tmp_path: Path) -> None:
    tok = WordPieceTokenizer.train(CORPUS, vocab_size=48, max_length=6)
    assert tok.vocab_size <= 48
    enc = tok(["no", "no acute process with many more words"])
    assert enc["input_ids"].shape[1] == 6  # truncated to max_length, padded to the longest
    assert enc["attention_mask"][1].sum() == 6
    assert enc["attention_mask"][0].sum() < 6
    assert torch.all(enc["input_ids"][0][enc["attention_mask"][0] == 0] == tok.pad_id)
    tok.save(tmp_path)
    again = WordPieceTokenizer.from_file(tmp_path / "tokenizer.json", max_length=6)
    assert torch.equal(
        again(["left pleural effusion"])["input_ids"], tok(["left pleural effusion"])["input_ids"]
    )
    with pytest.raises(ValueError, match="empty corpus"):
        WordPieceTokenizer.train(["", "  "], vocab_size=48, max_length=6)


def test_tokenizer_file_from_config_and_vocab_check(tmp_path: Path) -> None:
    WordPieceTokenizer.train(CORPUS, vocab_size=48, max_length=8).save(tmp_path)
    tower = TinyTextTransformer(
        TinyTextConfig(vocab_size=64, width=16, heads=2, tokenizer=str(tmp_path / "tokenizer.json"))
    )
    assert not tower.needs_tokenizer_training()
    with pytest.raises(ValueError, match=r"raise text\.vocab_size"):
        TinyTextTransformer(TinyTextConfig(vocab_size=16, width=16, heads=2, tokenizer=str(tmp_path)))


def test_slide_encoder_variable_bag_sizes() -> None:
    enc = SlideEncoder(SlideEncoderConfig(input_dim=6, width=12, heads=3, depth=2)).eval()
    bag = torch.randn(2, 7, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False
    padded = bag.clone()
    padded[0, 4:] = 1e3  # garbage in padded slots must not matter
    full = enc(padded, mask)
    torch.testing.assert_close(full[0], enc(bag[:1, :4], None)[0], rtol=1e-5, atol=1e-5)
    w = enc.attention_weights(padded, mask)
    assert torch.all(w[0, 4:] == 0)
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    assert len(enc.layer_groups()) == 4  # phi, 2 transformer layers, attention pool + rho
    with pytest.raises(ValueError, match=r"batch positions \[1\]"):
        enc(bag, torch.tensor([[True] * 7, [False] * 7]))
    with pytest.raises(ValueError, match=r"bag must be \(B, N, 6\)"):
        enc(torch.randn(2, 7, 5))


def test_slide_model_with_ordinal_head() -> None:
    data = {
        "embed_dim": 8,
        "text": None,
        "vision": {"kind": "slide", "input_dim": 6, "width": 12, "heads": 3},
        "classifiers": {"isup": {"kind": "ordinal"}},
    }
    model = build_model(config_from_dict(data, ModelConfig))
    out = model({"bag": torch.randn(3, 5, 6), "bag_mask": torch.ones(3, 5, dtype=torch.bool)})
    assert out["logits.isup"].shape == (3,)
    with pytest.raises(KeyError, match="batch\\['bag'\\]"):
        model({"pixel_values": torch.randn(3, 3, 8, 8)})


def test_views_for_simclr_and_masked_contrast() -> None:
    data = {
        "embed_dim": 8,
        "text": None,
        "vision": {"kind": "tiny_cnn", "widths": [4, 8]},
        "view_projection": {"kind": "mlp", "hidden_dim": 16},
        "masked_view": {"mask_ratio": 0.5, "patch_size": 4},
    }
    model = build_model(config_from_dict(data, ModelConfig)).eval()
    x = torch.randn(2, 3, 8, 8)
    out = model({"pixel_values": x, "pixel_values_view2": torch.flip(x, dims=[3])})
    for key in (
        "image_unimodal_embeds",
        "image_view1_embeds",
        "image_view2_embeds",
        "image_masked_unimodal_embeds",
    ):
        assert out[key].shape == (2, 8)
    assert out["image_view1_embeds"] is out["image_unimodal_embeds"]
    assert not torch.allclose(out["image_masked_unimodal_embeds"], out["image_unimodal_embeds"])


def test_mask_image_patches_fraction() -> None:
    x = torch.ones(3, 1, 8, 8)
    masked = mask_image_patches(x, mask_ratio=0.25, patch_size=2)  # 16 squares, 4 masked each
    assert torch.all((masked == 0).flatten(1).sum(1) == 4 * 4)
    assert torch.equal(x, torch.ones(3, 1, 8, 8))  # input untouched


def test_mask_bag_instances_keeps_one() -> None:
    mask = torch.tensor([[True, True, True, True, False], [True, False, False, False, False]])
    new = mask_bag_instances(mask, 0.5)
    assert new.sum(1).tolist() == [2, 1]
    assert not torch.any(new & ~mask)


@pytest.mark.parametrize(
    "vision",
    [
        {"kind": "tiny_vit", "image_size": 8, "patch_size": 4, "width": 16, "heads": 2, "depth": 2},
        {"kind": "tiny_cnn", "widths": [4, 8]},
    ],
)
def test_grad_checkpointing_gives_identical_gradients(vision: dict[str, object]) -> None:
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        text = {
            "kind": "tiny_text",
            "vocab_size": 64,
            "width": 16,
            "heads": 2,
            "depth": 2,
            "grad_checkpointing": checkpointing,
        }
        data = {"embed_dim": 8, "vision": {**vision, "grad_checkpointing": checkpointing}, "text": text}
        model = build_model(config_from_dict(data, ModelConfig))
        model.train_tokenizer(CORPUS)
        out = model({"pixel_values": torch.ones(2, 3, 8, 8), "texts": CORPUS[:2]})
        (out["image_embeds"] @ out["text_embeds"].T).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], msg=name)


def test_tokenizer_training_is_deterministic_and_covers_unseen_words() -> None:
    # the same corpus must give the same vocabulary in every run (reproducible runs)
    a = WordPieceTokenizer.train(CORPUS, vocab_size=40, max_length=16)
    b = WordPieceTokenizer.train(list(CORPUS), vocab_size=40, max_length=16)
    texts = ["left pleural effusion", "pneumonia"]
    assert torch.equal(a(texts)["input_ids"], b(texts)["input_ids"])
    unk = 1  # [UNK]
    ids = a(["pneumonia"])["input_ids"][0]  # unseen word: split into known characters, not [UNK]
    assert unk not in ids.tolist()
    assert len(ids) > 3
