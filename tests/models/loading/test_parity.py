"""Every published family embeds exactly as its authors' code does (issue 11).

For each family: a tiny random-weight checkpoint built from the family's own config classes and
saved locally (tests/_families.py), loaded through the front door (``load_model``); medvl's
embeddings must equal the family's own public API on the family's own preprocessing —
``get_image_features``/``get_text_features`` on the image processor's / tokenizer's output
(Hugging Face), ``encode_image``/``encode_text`` on ``preprocess``/the tokenizer (open_clip),
``forward_features`` + ``forward_head(pre_logits=True)`` on timm's transform — to 1e-5 (cosine ≥
0.99999): for one caption alone, for the same caption inside a batch of longer captions
(padding invariance), and for non-square images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from _families import CAPTION, LONGER, images
from medvl.models.loading import load_model

HF_FAMILIES = ["clip", "metaclip2", "siglip", "siglip2_fixed", "siglip2_naflex", "align"]
#: the family's own text call: the kwargs its processor / model card prescribe
HF_TEXT_KWARGS: dict[str, dict[str, Any]] = {
    "clip": {"padding": True, "truncation": True, "max_length": 77},
    "metaclip2": {"padding": True, "truncation": True, "max_length": 77},
    "siglip": {"padding": "max_length", "truncation": True, "max_length": 64},
    "siglip2_fixed": {"padding": "max_length", "truncation": True, "max_length": 64},
    "siglip2_naflex": {"padding": "max_length", "truncation": True, "max_length": 64},
    "align": {"padding": "max_length", "truncation": True, "max_length": 64},
}
#: families trained without an attention mask (big_vision): the authors' call passes input_ids only
NO_MASK = {"siglip", "siglip2_fixed", "siglip2_naflex"}


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    ours, theirs = ours.detach().float(), theirs.detach().float()
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    cos = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
    assert bool((cos >= 0.99999).all()), cos


def _hf_reference(directory: Any, family: str) -> tuple[Callable[[list[Any]], torch.Tensor],
                                                        Callable[[list[str]], torch.Tensor]]:
    import transformers as tf

    model = tf.AutoModel.from_pretrained(str(directory)).eval()
    processor = tf.AutoImageProcessor.from_pretrained(str(directory))
    tokenizer = tf.AutoTokenizer.from_pretrained(str(directory))

    def out(x: Any) -> torch.Tensor:
        return x if isinstance(x, torch.Tensor) else x.pooler_output

    def image(imgs: list[Any]) -> torch.Tensor:
        with torch.no_grad():
            return out(model.get_image_features(**processor(images=imgs, return_tensors="pt")))

    def text(texts: list[str]) -> torch.Tensor:
        tokens = dict(tokenizer(texts, return_tensors="pt", **HF_TEXT_KWARGS[family]))
        if family in NO_MASK:
            tokens.pop("attention_mask", None)
        tokens.pop("token_type_ids", None) if "token_type_ids" not in model.get_text_features.__code__.co_varnames else None
        with torch.no_grad():
            return out(model.get_text_features(**tokens))

    return image, text


def _check(model: Any, image_ref: Callable[[list[Any]], torch.Tensor] | None,
           text_ref: Callable[[list[str]], torch.Tensor] | None) -> None:
    imgs = images(3)
    assert imgs[0].size != (imgs[0].size[1], imgs[0].size[0])  # non-square
    ours = model.encode_images({"images": imgs})["image_emb"]
    if image_ref is not None:
        assert_same(ours, image_ref(imgs))
        assert_same(model.encode_images({"images": imgs[:1]})["image_emb"], image_ref(imgs[:1]))
    if text_ref is not None:
        alone, _ = model.encode_texts([CAPTION])
        batched, _ = model.encode_texts([*LONGER, CAPTION])
        reference = text_ref([CAPTION])
        assert_same(alone, reference)
        assert_same(batched[-1:], reference)  # padding invariance
        assert_same(batched[:-1], text_ref(LONGER))


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hugging_face_family_matches_its_own_api(family: str, family_dir: Callable[[str], Any]) -> None:
    directory = family_dir(family)
    model = load_model(directory)
    info = model.info()
    assert info.format == "hf" and model.input_kind == "raw"
    assert info.text_preprocessing is not None
    assert info.text_preprocessing["max_length"] == HF_TEXT_KWARGS[family]["max_length"]
    assert info.text_preprocessing["attention_mask"] is (family not in NO_MASK)
    image_ref, text_ref = _hf_reference(directory, family)
    _check(model, image_ref, text_ref)


def test_hf_family_rule_matches_the_processor_defaults(family_dir: Callable[[str], Any]) -> None:
    """Where the family's processor states its text defaults (SigLIP 2, ALIGN), medvl's tokens are its tokens."""
    import transformers as tf

    for family in ("siglip2_naflex", "align"):
        directory = family_dir(family)
        model = load_model(directory)
        processor = tf.AutoProcessor.from_pretrained(str(directory))
        theirs = processor(text=[CAPTION, *LONGER], return_tensors="pt")
        ours = model.text_inputs([CAPTION, *LONGER])  # type: ignore[attr-defined]
        assert torch.equal(ours["input_ids"].cpu(), theirs["input_ids"])


def _open_clip_reference(directory: Any) -> tuple[Any, Callable[[list[Any]], torch.Tensor],
                                                  Callable[[list[str]], torch.Tensor]]:
    import open_clip

    ref, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{directory}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    ref.eval()

    def image(imgs: list[Any]) -> torch.Tensor:
        with torch.no_grad():
            return ref.encode_image(torch.stack([preprocess(i) for i in imgs]))

    def text(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return ref.encode_text(tokenizer(texts))

    return ref, image, text


def test_open_clip_family_matches_encode_image_and_text(family_dir: Callable[[str], Any]) -> None:
    directory = family_dir("open_clip")
    model = load_model(directory)
    _, image, text = _open_clip_reference(directory)
    _check(model, image, text)
    assert model.info().text_preprocessing["max_length"] == 77  # type: ignore[index]


def test_biomedclip_layout_timm_vit_and_hf_bert(family_dir: Callable[[str], Any]) -> None:
    """BiomedCLIP = open_clip with a timm ViT image tower and a Hugging Face BERT text tower."""
    directory = family_dir("biomedclip")
    model = load_model(directory)
    info = model.info()
    assert info.towers["vision"] == "test_vit" and info.towers["text"].endswith("bert")
    ref, image, text = _open_clip_reference(directory)
    assert type(ref.visual).__name__ == "TimmModel" and type(ref.text).__name__ == "HFTextEncoder"
    _check(model, image, text)


def test_timm_backbone_matches_pre_logits_features(family_dir: Callable[[str], Any]) -> None:
    import timm

    directory = family_dir("timm")
    model = load_model(directory)
    assert not model.has_text and model.info().text_preprocessing is None
    ref = timm.create_model(f"local-dir:{directory}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=ref), is_training=False)

    def image(imgs: list[Any]) -> torch.Tensor:
        with torch.no_grad():
            x = torch.stack([transform(i) for i in imgs])
            return ref.forward_head(ref.forward_features(x), pre_logits=True)

    _check(model, image, None)
