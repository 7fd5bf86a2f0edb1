"""medvl's own models: a training run directory (``model/`` + a checkpoint) or a
``DualEncoder.save_pretrained`` directory, wrapped as an :class:`EmbeddingModel`.

:func:`load_trained_model` rebuilds the ``DualEncoder`` of a run with the weights of its ``best``
or ``last`` checkpoint (it lives here, with the model front door, so that evaluation and
experiments load trained models without importing the training loop's run module).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch

from medvl.models.loading.base import InputKind, ModelInfo, ModelLoadError, weights_hashes
from medvl.models.weights import evaluation_weights, load_model_weights, resolve_checkpoint
from medvl.utils.hashing import hash_file, hash_object

__all__ = ["MODEL_DIR", "MedvlModel", "load_trained_model"]

#: The model directory inside a run directory.
MODEL_DIR = "model"
LOGITS_PREFIX = "logits/"
#: ``logits["prototypes/<task>"]`` holds label-prototype scores (see medvl.evaluation.zeroshot).
PROTOTYPE_LOGITS_PREFIX = "prototypes/"


def load_trained_model(run_dir: str | os.PathLike[str], which: Literal["best", "last"] = "best",
                       device: str = "cpu") -> Any:
    """The ``DualEncoder`` of a run with the weights of its ``best`` (default) or ``last`` checkpoint."""
    from medvl.models import DualEncoder

    root = Path(run_dir)
    model = DualEncoder.from_pretrained(root / MODEL_DIR, device=device)
    load_model_weights(model, evaluation_weights(resolve_checkpoint(root, which)))  # the EMA when kept
    model.clear_feature_caches()
    return model


class MedvlModel:
    """A medvl ``DualEncoder``: joint-space embeddings, backbone features, classifier-head logits
    (``logits/<task>``) and label-prototype scores (``logits/prototypes/<task>``)."""

    input_kind: InputKind = "tensor"

    def __init__(self, model: Any, identity: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.identity = identity or {"format": "medvl", "kind": "medvl",
                                     "config_hash": hash_object(model.config.model_dump(mode="json"))}
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale().detach()) if callable(scale) else None
        self.has_text = getattr(model, "text", None) is not None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], which: str = "best", device: str = "cpu") -> MedvlModel:
        """Load a run directory (``model/`` + checkpoint ``which``) or a model directory."""
        from medvl.models import DualEncoder

        root = Path(path)
        if which not in ("best", "last"):
            raise ModelLoadError(f"which must be 'best' or 'last', got {which!r}")
        if (root / MODEL_DIR / "config.json").is_file():
            ckpt = resolve_checkpoint(root, which)  # type: ignore[arg-type]
            model = load_trained_model(root, which=which, device=device)  # type: ignore[arg-type]
            used = evaluation_weights(ckpt)
            weights = {"checkpoint": str(ckpt.name), used.name: hash_file(used)}
        elif (root / "config.json").is_file():
            model = DualEncoder.from_pretrained(root, device=device)
            weights = weights_hashes(root)
        else:
            raise ModelLoadError(f"{root}: neither a medvl run directory (model/config.json) nor a model directory")
        return cls(model, {"format": "medvl", "kind": "medvl", "path": str(root), "weights": weights})

    def info(self) -> ModelInfo:
        cfg = self.model.config
        text = None
        tower = getattr(self.model, "text", None)
        if tower is not None:
            tok = getattr(tower, "tokenizer", None)
            text = {"tokenizer": type(tok).__name__ if tok is not None else "n/a",
                    "max_length": getattr(tower, "max_length", getattr(tok, "max_length", None)),
                    "padding": getattr(tok, "padding", "longest"), "truncation": True, "attention_mask": True}
        towers = {"vision": cfg.vision.kind}
        if cfg.text is not None:
            towers["text"] = cfg.text.kind
        return ModelInfo(format="medvl", family="medvl", path=str(self.identity.get("path", "")), towers=towers,
                         embed_dim=int(self.model.embed_dim),
                         image_preprocessing={"by": "medvl transforms (the run's data config, evaluation mode)"},
                         text_preprocessing=text)

    def image_transform(self) -> None:
        return None  # the data config's evaluation transform (what the model was trained with)

    @torch.no_grad()
    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        inputs = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v
                  for k, v in batch.items() if k != "texts"}
        out = self.model(inputs)
        result = {"image_emb": out["image_embeds"], "image_features": out["image_features"]}
        for key, value in out.items():
            if key.startswith("logits."):
                result[LOGITS_PREFIX + key[len("logits."):]] = value
            elif key.startswith("prototype_logits."):
                result[LOGITS_PREFIX + PROTOTYPE_LOGITS_PREFIX + key[len("prototype_logits."):]] = value
        return result

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = self.model.text_features(texts)
        return self.model.project_text(feats), feats
