"""The model front door: load any supported checkpoint as an :class:`EmbeddingModel`.

``load_model(spec)`` tells the format from the checkpoint's own metadata (never its name, see
:mod:`medvl.models.loading.detect`) and returns a model whose embeddings equal what the
family's own code returns, on the family's own preprocessing:

=============  ==============================================  =======================================
format         families                                         embeds with
=============  ==============================================  =======================================
``hf``         CLIP (PubMedCLIP, PLIP, MetaCLIP, LAION),         ``get_image_features`` /
               MetaCLIP 2, SigLIP, SigLIP 2, ALIGN               ``get_text_features``
``open_clip``  any open_clip model, incl. BiomedCLIP             ``encode_image`` / ``encode_text``
               (timm ViT + Hugging Face BERT towers)
``timm``       timm image backbones (image-only)                 ``forward_features`` +
                                                                 ``forward_head(pre_logits=True)``
``medvl``      medvl run / model directories                     ``DualEncoder``
=============  ==============================================  =======================================

Precomputed embeddings (EmbeddingSet directories, ``.npz``) are recognised by
:func:`detect_format`/:func:`inspect_model` but are not a model: evaluation reads them directly.
Nothing in a model directory is executed unless ``trust_remote_code=True``.
"""

from __future__ import annotations

import os
from typing import Any

from medvl.models.loading.base import EmbeddingModel, InputKind, ModelInfo, ModelLoadError
from medvl.models.loading.detect import FORMATS, Detected, detect_format
from medvl.models.loading.medvl import MODEL_DIR, MedvlModel, load_trained_model

__all__ = [
    "FORMATS",
    "MODEL_DIR",
    "Detected",
    "EmbeddingModel",
    "InputKind",
    "MedvlModel",
    "ModelInfo",
    "ModelLoadError",
    "detect_format",
    "inspect_model",
    "load_model",
    "load_trained_model",
]


def load_model(
    spec: str | os.PathLike[str],
    *,
    device: str = "cpu",
    trust_remote_code: bool = False,
    which: str = "best",
) -> EmbeddingModel:
    """Load ``spec`` (a directory, ``hf-hub:`` id or hub id; see :mod:`~medvl.models.loading.detect`).

    ``which`` picks the checkpoint of a medvl run directory (``best`` or ``last``);
    ``trust_remote_code`` allows a Hugging Face directory's own code (``auto_map``) to run.
    """
    found = detect_format(spec)
    return _load_detected(found, device=device, trust_remote_code=trust_remote_code, which=which)


def _load_detected(found: Detected, *, device: str, trust_remote_code: bool, which: str) -> EmbeddingModel:
    if found.format in ("medvl_run", "medvl_model"):
        return MedvlModel.from_path(found.path, which=which, device=device)
    if found.format == "hf":
        from medvl.models.loading.hf import HFVisionLanguageModel

        return HFVisionLanguageModel(found.path, device=device, trust_remote_code=trust_remote_code)
    if found.format == "open_clip":
        from medvl.models.loading.open_clip import OpenClipModel

        return OpenClipModel(found.path, device=device, trust_remote_code=trust_remote_code, config=found.metadata)
    if found.format == "timm":
        from medvl.models.loading.timm import TimmImageModel

        return TimmImageModel(found.path, device=device, config=found.metadata)
    raise ModelLoadError(
        f"{found.spec}: precomputed embeddings ({found.metadata.get('kind')}), not a model; evaluate them with "
        "`medvl evaluate --embeddings` or `medvl align`"
    )


def inspect_model(spec: str | os.PathLike[str], *, trust_remote_code: bool = False) -> ModelInfo:
    """Family, towers, embedding dim, image preprocessing, tokenizer, max text length and padding rule."""
    found = detect_format(spec)
    if found.format == "embeddings":
        return _inspect_embeddings(found)
    model = _load_detected(found, device="cpu", trust_remote_code=trust_remote_code, which="best")
    return model.info()


def _inspect_embeddings(found: Detected) -> ModelInfo:
    import json

    import numpy as np

    extra: dict[str, Any] = {}
    dim = None
    if found.metadata.get("kind") == "npz":
        with np.load(found.path) as data:
            extra["arrays"] = {k: list(data[k].shape) for k in data.files}
            if "image" in data.files:
                dim = int(data["image"].shape[-1])
    else:
        meta = json.loads((found.path / "embeddings.json").read_text(encoding="utf-8"))
        inner = meta.get("meta", {}) if isinstance(meta, dict) else {}
        extra["model"] = inner.get("model")
        extra["split"] = inner.get("split")
    return ModelInfo(format="embeddings", family="precomputed", path=str(found.path), embed_dim=dim,
                     image_preprocessing={"by": "already embedded"}, text_preprocessing=None, extra=extra)
