"""SigLIP 2, ALIGN, open_clip and timm checkpoints as medvl training towers: features equal the
family's own forward on the same pixels/tokens, layer groups exist for freezing, FLIP where it applies,
and a saved model rebuilds offline with identical outputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from _families import CAPTION, LONGER
from medvl.config.model import ModelConfig
from medvl.models import DualEncoder, build_model


def _model(vision: dict[str, Any], text: dict[str, Any] | None = None) -> DualEncoder:
    return build_model(ModelConfig.model_validate({"embed_dim": 8, "vision": vision, "text": text}))


def test_siglip2_vision_tower_equals_naflex_forward(family_dir: Callable[[str], Path]) -> None:
    import transformers as tf
    from PIL import Image

    directory = family_dir("siglip2_naflex")
    model = _model({"kind": "hf", "name_or_path": str(directory), "freeze": {"mode": "partial", "groups": 1}})
    ref = tf.Siglip2Model.from_pretrained(str(directory)).eval()
    processor = tf.AutoImageProcessor.from_pretrained(str(directory))
    img = Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))
    inputs = processor(images=[img], return_tensors="pt")  # 16 px, patch 4 → a full 4×4 grid, no padding
    pixels = (torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    model.eval()
    with torch.no_grad():
        ours = model.image_features({"pixel_values": pixels})
        theirs = ref.get_image_features(**inputs).pooler_output
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert len(model.vision.layer_groups()) == 3 and model.freeze_states["vision"].n_frozen_groups == 1
    with pytest.raises(ValueError, match="cannot drop patches"):
        _model({"kind": "hf", "name_or_path": str(directory), "patch_keep_ratio": 0.5})


def test_align_towers_equal_align_model(family_dir: Callable[[str], Path], tmp_path: Path) -> None:
    import transformers as tf

    directory = family_dir("align")
    model = _model({"kind": "hf", "name_or_path": str(directory)},
                   {"kind": "hf", "name_or_path": str(directory), "padding": "max_length", "max_length": 64})
    ref = tf.AlignModel.from_pretrained(str(directory)).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(str(directory))
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    texts = [CAPTION, *LONGER]
    with torch.no_grad():
        torch.testing.assert_close(model.image_features({"pixel_values": pixels}),
                                   ref.get_image_features(pixel_values=pixels).pooler_output, atol=1e-5, rtol=1e-5)
        tokens = tokenizer(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        cls = ref.text_model(**tokens).last_hidden_state[:, 0]  # what get_text_features projects
        torch.testing.assert_close(model.text_features(texts), cls, atol=1e-5, rtol=1e-5)
    assert len(model.vision.layer_groups()) == 1 + 7  # stem + the 7 MBConv blocks of the tiny config
    model.save_pretrained(tmp_path / "m")
    again = DualEncoder.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(again.encode_image(pixels), model.encode_image(pixels))


def test_open_clip_towers_equal_open_clip(family_dir: Callable[[str], Path], tmp_path: Path) -> None:
    import open_clip

    directory = family_dir("biomedclip")  # timm ViT + HF BERT text tower
    model = _model({"kind": "open_clip", "model": str(directory), "freeze": {"mode": "partial", "groups": 2}},
                   {"kind": "open_clip", "model": str(directory)})
    ref, _ = open_clip.create_model_from_pretrained(f"local-dir:{directory}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    ref.eval()
    model.eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.image_features({"pixel_values": pixels}), ref.encode_image(pixels))
        torch.testing.assert_close(model.text_features([CAPTION, *LONGER]), ref.encode_text(tokenizer([CAPTION, *LONGER])))
    assert model.freeze_states["vision"].n_frozen_groups == 2
    model.save_pretrained(tmp_path / "m")
    again = DualEncoder.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(again.encode_text([CAPTION]), model.encode_text([CAPTION]))
        torch.testing.assert_close(again.encode_image(pixels), model.encode_image(pixels))


def test_timm_tower_equals_pre_logits_and_flip(family_dir: Callable[[str], Path]) -> None:
    import timm

    directory = family_dir("timm")
    model = _model({"kind": "timm", "model_name": f"local-dir:{directory}", "pretrained": True,
                    "freeze": {"mode": "partial", "groups": 2}})
    ref = timm.create_model(f"local-dir:{directory}", pretrained=True).eval()
    model.eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.image_features({"pixel_values": pixels}),
                                   ref.forward_head(ref.forward_features(pixels), pre_logits=True))
    flip = _model({"kind": "timm", "model_name": "test_vit", "model_args": {"img_size": 32}, "patch_keep_ratio": 0.5})
    assert flip.vision.model.patch_drop.prob == 0.5
    with pytest.raises(ValueError, match="no patch dropout"):
        _model({"kind": "timm", "model_name": "test_resnet", "patch_keep_ratio": 0.5})
