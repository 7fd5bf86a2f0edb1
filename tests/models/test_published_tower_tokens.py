"""Token outputs of the published-family vision towers (what CoCa's decoder cross-attends to): each equals
what the family's own code gives (open_clip ``output_tokens``, timm ``forward_features``, the transformers
model's last layer), has ``token_dim`` channels, and comes with pooled features identical to the tower's
forward. Tiny random-weight towers built from configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.models._coca_models import CORPUS, tiny_coca

from medvl.config.model import ModelConfig
from medvl.models import build_model


def _tower(vision: dict[str, Any]) -> Any:
    model = build_model(ModelConfig.model_validate({"embed_dim": 8, "vision": vision, "text": None}))
    return model.vision.eval()


def _tokens(tower: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        pooled, tokens = tower.encode_tokens({"pixel_values": pixels})
        assert torch.equal(
            pooled, tower(pixels)
        )  # one pass gives the tower's own pooled features, bit for bit
    assert tokens.shape[0] == pixels.shape[0] and tokens.shape[2] == tower.token_dim
    return pooled, tokens


def test_open_clip_vit_tokens_are_open_clips_output_tokens(family_dir: Callable[[str], Path]) -> None:
    import open_clip

    directory = family_dir("open_clip")
    tower = _tower({"kind": "open_clip", "model": str(directory)})
    ref, _ = open_clip.create_model_from_pretrained(f"local-dir:{directory}")
    ref.eval()
    ref.visual.output_tokens = True  # what open_clip's CoCa reads: patch tokens after ln_post
    pixels = torch.randn(2, 3, 32, 32)
    pooled, tokens = _tokens(tower, pixels)
    with torch.no_grad():
        ref_pooled, ref_tokens = ref.visual(pixels)
    torch.testing.assert_close(tokens, ref_tokens)
    torch.testing.assert_close(pooled, ref_pooled)
    assert tokens.shape == (2, 16, 32) and not tower.visual.output_tokens  # the flag is restored


def test_open_clip_timm_trunk_tokens_are_forward_features(family_dir: Callable[[str], Path]) -> None:
    import open_clip

    directory = family_dir("biomedclip")  # BiomedCLIP's layout: a timm ViT trunk + linear head
    tower = _tower({"kind": "open_clip", "model": str(directory)})
    ref, _ = open_clip.create_model_from_pretrained(f"local-dir:{directory}")
    ref.eval()
    pixels = torch.randn(2, 3, 32, 32)
    pooled, tokens = _tokens(tower, pixels)
    with torch.no_grad():
        torch.testing.assert_close(tokens, ref.visual.trunk.forward_features(pixels))
        torch.testing.assert_close(pooled, ref.encode_image(pixels))
    assert tokens.shape[1] == 1 + (32 // 16) ** 2  # test_vit: patch 16, one class token


def test_open_clip_modified_resnet_tokens_are_its_last_stage() -> None:
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    tower = _tower({"kind": "open_clip", "model_cfg": cfg})
    pixels = torch.randn(2, 3, 64, 64)
    pooled, tokens = _tokens(tower, pixels)
    v = tower.visual
    with torch.no_grad():
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(pixels)))))
    torch.testing.assert_close(tokens, x.flatten(2).transpose(1, 2))
    assert tokens.shape == (2, 4, 8 * 32) and pooled.shape == (2, 16)


@pytest.mark.parametrize(
    ("vision", "size", "count"),
    [
        ({"model_name": "test_vit", "model_args": {"img_size": 32}}, 32, 1 + 4),  # sequence, class token kept
        ({"model_name": "test_resnet"}, 64, 4),  # NCHW map 2×2
        ({"model_name": "test_mambaout"}, 64, 4),  # NHWC map (output_fmt) 2×2
    ],
    ids=["vit", "resnet", "nhwc"],
)
def test_timm_tokens_are_forward_features(vision: dict[str, Any], size: int, count: int) -> None:
    tower = _tower({"kind": "timm", **vision})
    pixels = torch.randn(2, 3, size, size)
    _, tokens = _tokens(tower, pixels)
    with torch.no_grad():
        features = tower.model.forward_features(pixels)
    if features.ndim == 4:
        nhwc = (
            features if getattr(tower.model, "output_fmt", "NCHW") == "NHWC" else features.permute(0, 2, 3, 1)
        )
        features = nhwc.flatten(1, 2)
    torch.testing.assert_close(tokens, features)
    assert tokens.shape[1] == count


def test_timm_feature_dim_is_the_pre_logits_width() -> None:
    # MobileNetV3: forward_features has 288 channels (the tokens), the pooled pre-logits 1024 (after the head conv)
    tower = _tower({"kind": "timm", "model_name": "mobilenetv3_small_050"})
    pooled, tokens = _tokens(tower, torch.randn(2, 3, 32, 32))
    assert (tower.feature_dim, tower.token_dim) == (1024, 288) == (pooled.shape[1], tokens.shape[2])


def test_hf_clip_with_projection_and_naflex_and_align_tokens(family_dir: Callable[[str], Path]) -> None:
    import transformers as tf

    clip_dir = family_dir("clip")
    tower = _tower({"kind": "hf", "name_or_path": str(clip_dir), "with_projection": True})
    ref = tf.CLIPModel.from_pretrained(str(clip_dir)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    pooled, tokens = _tokens(tower, pixels)
    with torch.no_grad():
        out = ref.vision_model(pixel_values=pixels)
        torch.testing.assert_close(pooled, ref.visual_projection(out.pooler_output))
        torch.testing.assert_close(tokens, ref.vision_model.post_layernorm(out.last_hidden_state))
    assert (tower.feature_dim, tower.token_dim) == (16, 32)

    naflex = _tower({"kind": "hf", "name_or_path": str(family_dir("siglip2_naflex"))})
    _, tokens = _tokens(naflex, torch.randn(2, 3, 16, 16))
    assert tokens.shape == (2, 16, 32)  # a full 4×4 grid of 4-px patches

    align_dir = family_dir("align")
    align = _tower({"kind": "hf", "name_or_path": str(align_dir)})
    ref_align = tf.AlignModel.from_pretrained(str(align_dir)).vision_model.eval()
    pooled, tokens = _tokens(align, pixels)
    with torch.no_grad():
        torch.testing.assert_close(
            tokens, ref_align(pixel_values=pixels).last_hidden_state.flatten(2).transpose(1, 2)
        )
    torch.testing.assert_close(pooled, tokens.mean(1))  # ALIGN's pooler averages the map


def test_coca_decoder_accepts_a_published_tower(family_dir: Callable[[str], Path]) -> None:
    model = tiny_coca(vision={"kind": "open_clip", "model": str(family_dir("open_clip"))})
    pixels = torch.randn(2, 3, 32, 32)
    out = model({"pixel_values": pixels, "texts": list(CORPUS[:2])})
    assert out["caption_logits"].shape[:2] == out["caption_labels"].shape
    assert (
        model.decoder is not None and model.decoder.image_proj[0].in_features == model.vision.token_dim == 32
    )
    assert len(model.generate({"pixel_values": pixels}, max_length=6)) == 2
