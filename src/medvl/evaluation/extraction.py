"""Embedding extraction: a model + an evaluation-mode dataset → :class:`EmbeddingSet`.

Two model sources, behind one small protocol (:class:`EmbeddingModel`):

* :class:`MedvlEncoder` — a medvl ``DualEncoder`` (a training run directory, its ``model/``
  directory, or a ``save_pretrained`` directory). Stores joint-space embeddings, backbone
  features, classifier-head logits (``logits[task]``) and label-prototype scores
  (``logits["prototypes/<task>"]``).
* :class:`HFClipEncoder` — a Hugging Face CLIP-family directory (``AutoModel`` with
  ``get_image_features``/``get_text_features``, a tokenizer and ``preprocessor_config.json``);
  images get the checkpoint's own resize / centre-crop / mean / std.

Extraction is batched (``torch.no_grad``, model in eval mode), shows a progress bar, and can be
cached on disk under ``cache_dir/<key>/`` where the key hashes the model identity (weight-file
hashes), the data (manifest hash, split, record ids) and the transform description.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError
from medvl.evaluation.zeroshot import PROTOTYPE_LOGITS_PREFIX
from medvl.utils.hashing import hash_file, hash_object

__all__ = [
    "EmbeddingModel",
    "HFClipEncoder",
    "MedvlEncoder",
    "cache_key",
    "extract_embeddings",
    "load_encoder",
]


class EmbeddingModel(Protocol):
    """What extraction needs from a model."""

    #: JSON-able description (kind, path, weight hashes) used for provenance and the cache key
    identity: dict[str, Any]
    #: learnt logit scale (exp of the log-scale), or None
    logit_scale: float | None
    #: whether the model has a text tower (image-only models give an EmbeddingSet without captions)
    has_text: bool

    def image_transform(self) -> Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None:
        """The deterministic image preprocessing this model expects (None = use the data config's)."""
        ...

    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``image_emb`` (B, D), optional ``image_features`` (B, F) and ``logits/<name>`` (B, C)."""
        ...

    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Joint-space text embeddings (n, D) and optional pre-projection features (n, F)."""
        ...


def _weights_hashes(directory: Path) -> dict[str, str]:
    files = sorted(p for p in directory.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    if not files:
        raise FileNotFoundError(f"{directory}: no weight files (*.safetensors / *.bin)")
    return {str(p.relative_to(directory)): hash_file(p) for p in files}


class MedvlEncoder:
    """A medvl ``DualEncoder`` (from a run directory or a ``save_pretrained`` directory)."""

    def __init__(self, model: Any, identity: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.identity = identity or {"kind": "medvl", "config_hash": hash_object(model.config.model_dump(mode="json"))}
        scale = getattr(model, "logit_scale", None)
        self.logit_scale = float(scale().detach()) if callable(scale) else None
        self.has_text = getattr(model, "text", None) is not None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], which: str = "best", device: str = "cpu") -> MedvlEncoder:
        """Load a run directory (``model/`` + checkpoint ``which``) or a model directory."""
        from medvl.models import DualEncoder

        root = Path(path)
        if (root / "model" / "config.json").is_file():
            from medvl.training.checkpoint import resolve_checkpoint
            from medvl.training.run import load_trained_model

            ckpt = resolve_checkpoint(root, which)  # type: ignore[arg-type]
            model = load_trained_model(root, which=which, device=device)  # type: ignore[arg-type]
            weights = {"checkpoint": str(ckpt.name), "model.safetensors": hash_file(ckpt / "model.safetensors")}
        elif (root / "config.json").is_file():
            model = DualEncoder.from_pretrained(root, device=device)
            weights = _weights_hashes(root)
        else:
            raise FileNotFoundError(f"{root}: neither a medvl run directory (model/config.json) nor a model directory")
        identity = {"kind": "medvl", "path": str(root), "weights": weights}
        return cls(model, identity)

    def image_transform(self) -> None:
        return None  # the data config's evaluation transform (what the model was trained with)

    @torch.no_grad()
    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        inputs = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items() if k != "texts"}
        out = self.model(inputs)
        result = {"image_emb": out["image_embeds"], "image_features": out["image_features"]}
        for key, value in out.items():
            if key.startswith("logits."):
                result["logits/" + key[len("logits.") :]] = value
            elif key.startswith("prototype_logits."):
                result["logits/" + PROTOTYPE_LOGITS_PREFIX + key[len("prototype_logits.") :]] = value
        return result

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = self.model.text_features(texts)
        return self.model.project_text(feats), feats


class HFClipEncoder:
    """A Hugging Face CLIP-family model directory (local; nothing is downloaded)."""

    def __init__(self, directory: str | os.PathLike[str], device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        root = Path(directory)
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"{root}: no config.json (not a Hugging Face model directory)")
        self.model = AutoModel.from_pretrained(str(root)).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(root))
        for name in ("get_image_features", "get_text_features"):
            if not hasattr(self.model, name):
                raise TypeError(f"{root}: {type(self.model).__name__} has no {name} (not a CLIP-family model)")
        self.device = torch.device(device)
        self.preprocessing = self._read_preprocessing(root)
        self.identity = {"kind": "hf", "path": str(root), "class": type(self.model).__name__, "weights": _weights_hashes(root)}
        scale = getattr(self.model, "logit_scale", None)
        self.logit_scale = float(scale.exp().detach()) if isinstance(scale, torch.Tensor) else None
        self.has_text = True
        text_cfg = getattr(self.model.config, "text_config", None)
        self.max_length = int(getattr(text_cfg, "max_position_embeddings", 77) or 77)

    @staticmethod
    def _read_preprocessing(root: Path) -> dict[str, Any]:
        from medvl.utils.io import read_json

        path = root / "preprocessor_config.json"
        cfg = read_json(path) if path.is_file() else {}
        size = cfg.get("crop_size") or cfg.get("size") or 224
        if isinstance(size, dict):
            size = size.get("height") or size.get("shortest_edge") or 224
        resize = cfg.get("size", size)
        if isinstance(resize, dict):
            resize = resize.get("shortest_edge") or resize.get("height") or size
        return {
            "resize": int(resize),
            "crop": int(size),
            "mean": list(cfg.get("image_mean", [0.48145466, 0.4578275, 0.40821073])),
            "std": list(cfg.get("image_std", [0.26862954, 0.26130258, 0.27577711])),
        }

    def image_transform(self) -> Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]:
        from medvl.data.transforms import CenterCrop, Compose, Normalize, Resize

        p = self.preprocessing
        return Compose([Resize(p["resize"]), CenterCrop(p["crop"]), Normalize(p["mean"], p["std"])])

    @staticmethod
    def _pooled(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def encode_images(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "pixel_values" not in batch:
            raise EmbeddingSetError("Hugging Face image towers need images (pixel_values), not feature bags")
        pixels = batch["pixel_values"].to(self.device)
        m = self.model
        if hasattr(m, "vision_model") and hasattr(m, "visual_projection"):
            feats = m.vision_model(pixel_values=pixels).pooler_output
            return {"image_emb": m.visual_projection(feats), "image_features": feats}
        return {"image_emb": self._pooled(m.get_image_features(pixel_values=pixels))}

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        m = self.model
        if hasattr(m, "text_model") and hasattr(m, "text_projection"):
            feats = m.text_model(**tokens).pooler_output
            return m.text_projection(feats), feats
        return self._pooled(m.get_text_features(**tokens)), None


def load_encoder(checkpoint: str | os.PathLike[str] | None = None, hf_model: str | os.PathLike[str] | None = None,
                 *, which: str = "best", device: str = "cpu") -> EmbeddingModel:
    """A medvl checkpoint / run directory or a Hugging Face directory (exactly one)."""
    if (checkpoint is None) == (hf_model is None):
        raise ValueError("give exactly one of a medvl checkpoint/run directory or a Hugging Face model directory")
    if checkpoint is not None:
        return MedvlEncoder.from_path(checkpoint, which=which, device=device)
    assert hf_model is not None
    return HFClipEncoder(hf_model, device=device)


def cache_key(model: EmbeddingModel, data: dict[str, Any], transform: Any) -> str:
    """sha256 of (model identity, data description, transform repr); the first 24 hex digits."""
    return hash_object({"model": model.identity, "data": data, "transform": repr(transform), "format": 1})[:24]


def _progress(iterable: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def extract_embeddings(
    model: EmbeddingModel,
    dataset: Any,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    tasks: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    data_identity: dict[str, Any] | None = None,
) -> EmbeddingSet:
    """Encode every image and every caption of an evaluation-mode ``ImageTextDataset``.

    Records skipped by the dataset (``on_bad_sample: skip``) are left out and counted in
    ``meta["skipped"]``, with their captions. ``tasks`` (default: the dataset's) gives the label
    columns; their specs go into ``meta["tasks"]``.
    """
    from torch.utils.data import DataLoader

    from medvl.data.dataset import collate

    if getattr(dataset, "train", False):
        raise ValueError("extraction needs an evaluation-mode dataset (train=False): every caption, no augmentation")
    key = None
    if cache_dir is not None:
        ident = data_identity or {"ids": hash_object(list(dataset.ids))}
        key = cache_key(model, ident, getattr(dataset, "transform", None))
        target = Path(cache_dir) / key
        if (target / "embeddings.json").is_file():
            return EmbeddingSet.load(target)
    task_names = list(tasks) if tasks is not None else list(dataset.task_names)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    indices: list[np.ndarray] = []
    chunks: dict[str, list[np.ndarray]] = {}
    load_skips = 0
    n_batches = (len(dataset) + batch_size - 1) // batch_size
    for batch in _progress(loader, n_batches, "images", progress):
        load_skips += len(batch.get("skipped") or [])
        if len(batch["ids"]) == 0:
            continue
        out = model.encode_images(batch)
        indices.append(np.asarray(batch["index"].cpu().numpy(), dtype=np.int64))
        for name, value in out.items():
            v = value.detach().float().cpu().numpy()
            chunks.setdefault(name, []).append(v if v.ndim == 2 else v[:, None])
    if not indices:
        raise EmbeddingSetError("no images could be encoded (empty split or every record skipped)")
    kept = np.concatenate(indices)
    arrays = {name: np.concatenate(parts) for name, parts in chunks.items()}
    texts, c2i_full = dataset.captions()
    if not getattr(model, "has_text", True):  # image-only model: no caption embeddings
        texts, c2i_full = [], np.zeros(0, dtype=np.int64)
    remap = np.full(len(dataset), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    keep_caps = np.flatnonzero(remap[c2i_full] >= 0)
    kept_texts = [texts[i] for i in keep_caps]
    # Each distinct caption string is encoded once (report sentences repeat a lot), so equal
    # captions get bit-identical embeddings whatever the batching, and ties stay exact ties.
    unique_index: dict[str, int] = {}
    caption_slot = np.asarray([unique_index.setdefault(t, len(unique_index)) for t in kept_texts], dtype=np.int64)
    unique_texts = list(unique_index)
    text_emb_parts: list[np.ndarray] = []
    text_feat_parts: list[np.ndarray] = []
    starts = range(0, len(unique_texts), batch_size)
    for start in _progress(starts, len(starts), "captions", progress):
        t_emb, feats = model.encode_texts(unique_texts[start : start + batch_size])
        text_emb_parts.append(t_emb.detach().float().cpu().numpy())
        if feats is not None:
            text_feat_parts.append(feats.detach().float().cpu().numpy())
    dim = arrays["image_emb"].shape[1]
    text_emb = np.concatenate(text_emb_parts)[caption_slot] if text_emb_parts else np.zeros((0, dim), np.float32)
    text_features = None
    if text_feat_parts and len(text_feat_parts) == len(text_emb_parts):
        text_features = np.concatenate(text_feat_parts)[caption_slot]
    labels, masks, specs = {}, {}, {}
    for t in task_names:
        labels[t] = np.asarray(dataset.labels(t))[kept]
        m = np.asarray(dataset.label_masks(t))
        if m.shape == np.asarray(dataset.labels(t)).shape and not m.all():
            masks[t] = m[kept]
        spec = dataset.manifest.task(t)
        specs[t] = spec.to_dict() if hasattr(spec, "to_dict") else spec
    info = dict(meta or {})
    info["tasks"] = specs
    info["model"] = model.identity
    info["logit_scale"] = model.logit_scale
    info["transform"] = repr(getattr(dataset, "transform", None))
    skipped = dataset.skip_report() if hasattr(dataset, "skip_report") else {"n_skipped": 0}
    skipped["n_skipped_at_load"] = load_skips
    skipped["n_captions_dropped"] = int(len(texts) - len(kept_texts))
    info["skipped"] = skipped
    logits = {name[len("logits/") :]: arr for name, arr in arrays.items() if name.startswith("logits/")}
    emb = EmbeddingSet(
        image_emb=arrays["image_emb"],
        text_emb=text_emb,
        caption_to_image=remap[c2i_full[keep_caps]],
        image_ids=[dataset.ids[i] for i in kept],
        labels=labels,
        label_mask=masks,
        image_features=arrays.get("image_features"),
        text_features=text_features,
        logits=logits,
        meta=info,
        texts=kept_texts,
    )
    if cache_dir is not None and key is not None:
        info["cache_key"] = key
        emb.save(Path(cache_dir) / key)
    return emb
