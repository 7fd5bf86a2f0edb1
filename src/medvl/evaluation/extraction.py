"""Embedding extraction: a model + an evaluation-mode dataset → :class:`EmbeddingSet`.

Models come from the front door, :func:`medvl.models.loading.load_model` (medvl runs, Hugging
Face, open_clip and timm checkpoints), behind its :class:`~medvl.models.loading.EmbeddingModel`
protocol. A published family gets the decoded images and preprocesses them with its own
processor (:func:`evaluation_dataset` builds the dataset each model needs); a medvl model gets
medvl's evaluation transform. A medvl model also stores backbone features, classifier-head
logits (``logits[task]``) and label-prototype scores (``logits["prototypes/<task>"]``).

Extraction is batched (``torch.no_grad``, model in eval mode), shows a progress bar, and can be
cached on disk under ``cache_dir/<key>/`` where the key hashes the model identity (weight-file
hashes), the data (manifest hash, split, record ids, and a fingerprint of the image files: size +
mtime, or content, per ``data.file_fingerprint``) and the transform description. An unreadable
cache entry is recomputed with a warning.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.fingerprint import FingerprintMode, files_fingerprint
from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError
from medvl.models.loading import EmbeddingModel, load_model
from medvl.utils.hashing import hash_object

__all__ = [
    "EmbeddingModel",
    "cache_key",
    "evaluation_dataset",
    "extract_embeddings",
    "load_encoder",
    "preprocessing_record",
]


def load_encoder(checkpoint: str | os.PathLike[str] | None = None, hf_model: str | os.PathLike[str] | None = None,
                 *, which: str = "best", device: str = "cpu", trust_remote_code: bool = False) -> EmbeddingModel:
    """Deprecated alias of :func:`medvl.models.loading.load_model` (exactly one of the two specs)."""
    if (checkpoint is None) == (hf_model is None):
        raise ValueError("give exactly one of a medvl checkpoint/run directory or a Hugging Face model directory")
    spec = checkpoint if checkpoint is not None else hf_model
    assert spec is not None
    return load_model(spec, which=which, device=device, trust_remote_code=trust_remote_code)


def evaluation_dataset(model: EmbeddingModel, manifest: Any, data_cfg: Any, *, transform: Any = None) -> Any:
    """The evaluation-mode ``ImageTextDataset`` of ``manifest`` that ``model`` reads: decoded 8-bit RGB
    images for a family that preprocesses them itself (``input_kind == "raw"``), otherwise tensors
    from ``transform`` (default: the data config's evaluation transform)."""
    from medvl.data.dataset import ImageTextDataset
    from medvl.data.transforms import build_transforms

    raw = model.input_kind == "raw"
    if not raw and transform is None:
        transform = model.image_transform() or build_transforms(data_cfg, train=False)
    return ImageTextDataset(manifest, train=False, transform=None if raw else transform, tasks=data_cfg.tasks,
                            seed=0, channels=3 if raw else data_cfg.channels, on_bad_sample=data_cfg.on_bad_sample,
                            require_texts=False, dicom_window=data_cfg.dicom_window, bag_key=data_cfg.bag_key,
                            raw_images=raw)


def preprocessing_record(model: EmbeddingModel, dataset: Any) -> dict[str, Any]:
    """What ``results.json`` records about how inputs reached the model: family, image preprocessing
    (the family's processor and its settings, or medvl's transform) and the text settings."""
    info = model.info()
    image = dict(info.image_preprocessing)
    if model.input_kind != "raw":
        image["transform"] = repr(getattr(dataset, "transform", None))
    return {"format": info.format, "family": info.family, "image": image, "text": info.text_preprocessing,
            "trust_remote_code": info.trust_remote_code}


def cache_key(model: EmbeddingModel, data: dict[str, Any], transform: Any) -> str:
    """sha256 of (model identity, data description, transform repr); the first 24 hex digits."""
    return hash_object({"model": model.identity, "data": data, "transform": repr(transform),
                        "input": getattr(model, "input_kind", "tensor"), "format": 1})[:24]


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
    file_fingerprint: FingerprintMode = "stat",
) -> EmbeddingSet:
    """Encode every image and every caption of an evaluation-mode ``ImageTextDataset``.

    Records skipped by the dataset (``on_bad_sample: skip``) are left out and counted in
    ``meta["skipped"]``, with their captions. ``tasks`` (default: the dataset's) gives the label
    columns; their specs go into ``meta["tasks"]``.
    """
    from torch.utils.data import DataLoader

    from medvl.data.dataset import collate, track_skips

    if getattr(dataset, "train", False):
        raise ValueError("extraction needs an evaluation-mode dataset (train=False): every caption, no augmentation")
    key = None
    if cache_dir is not None:
        ident = dict(data_identity or {"ids": hash_object(list(dataset.ids))})
        if getattr(getattr(dataset, "manifest", None), "root", None) is not None:
            # the image files themselves (size + mtime, or content): a replaced image is not a cache hit
            ident["files"] = files_fingerprint(dataset.manifest, file_fingerprint)
        key = cache_key(model, ident, getattr(dataset, "transform", None))
        target = Path(cache_dir) / key
        if (target / "embeddings.json").is_file():
            try:
                return EmbeddingSet.load(target)
            except EmbeddingSetError as exc:  # a truncated or corrupt cache entry is recomputed
                warnings.warn(f"embedding cache entry {target} is unreadable ({exc}); recomputing it", stacklevel=2)
    task_names = list(tasks) if tasks is not None else list(dataset.task_names)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    indices: list[np.ndarray] = []
    chunks: dict[str, list[np.ndarray]] = {}
    load_skips = 0
    n_batches = (len(dataset) + batch_size - 1) // batch_size
    for batch in _progress(track_skips(loader, dataset), n_batches, "images", progress):
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
    info["preprocessing"] = preprocessing_record(model, dataset)
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
