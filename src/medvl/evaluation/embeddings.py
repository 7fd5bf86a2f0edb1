"""`EmbeddingSet`: the one input of every evaluation task.

An EmbeddingSet holds, for one split of one dataset encoded by one model:

* ``image_emb``  float32 (N_img, D)  joint-space image embeddings (as the model returned them;
  **not** normalised here, each task normalises where its method says so);
* ``text_emb``   float32 (N_txt, D)  joint-space embeddings of *every* caption;
* ``caption_to_image`` int64 (N_txt,) index of the image each caption belongs to;
* ``image_ids``  list[str] (N_img,)  record ids;
* ``labels``     dict task -> array, one row per image (multilabel (N, C) float 0/1,
  multiclass/ordinal (N,) int, regression (N,) float);
* ``label_mask`` dict task -> bool (N, C), optional: which classes are annotated (partial labels);
* ``image_features`` / ``text_features`` optional pre-projection backbone features;
* ``logits``     dict task -> float (N, C) classifier-head outputs, optional;
* ``meta``       JSON-able dict (model, manifest hash, split, transform, ``tasks`` specs).

Saved as ``<dir>/embeddings.safetensors`` (all arrays) + ``<dir>/embeddings.json`` (ids, meta,
and which array is which). Any model's embeddings exported as arrays can be wrapped with
:meth:`EmbeddingSet.from_arrays` and go through the same evaluation code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvl.utils.errors import UserInputError
from medvl.utils.io import atomic_write_bytes, atomic_write_json, read_json

__all__ = [
    "EMBEDDINGS_FORMAT_VERSION",
    "NPZ_ARRAYS",
    "EmbeddingSet",
    "EmbeddingSetError",
    "TaskInfo",
    "check_nonzero_rows",
    "l2_normalize",
    "load_embeddings",
]

EMBEDDINGS_FORMAT_VERSION = 1
_TENSORS_FILE = "embeddings.safetensors"
_META_FILE = "embeddings.json"
TASK_KINDS = ("multilabel", "multiclass", "ordinal", "regression")


class EmbeddingSetError(UserInputError, ValueError):
    """An EmbeddingSet (or the arrays given to build one) is inconsistent; the message says which field."""


@dataclass(frozen=True)
class TaskInfo:
    """What a label column means: kind and class names (grades in order for ordinal tasks)."""

    name: str
    kind: str
    classes: tuple[str, ...]
    base_classes: tuple[str, ...] = ()
    novel_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise EmbeddingSetError(f"task {self.name!r}: kind must be one of {TASK_KINDS}, got {self.kind!r}")
        unknown = [c for c in (*self.base_classes, *self.novel_classes) if c not in self.classes]
        if unknown:
            raise EmbeddingSetError(f"task {self.name!r}: base/novel classes not in classes: {unknown}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": list(self.classes),
            "base_classes": list(self.base_classes),
            "novel_classes": list(self.novel_classes),
        }

    @classmethod
    def from_obj(cls, name: str, obj: Any) -> TaskInfo:
        """Build from a dict, a TaskInfo, or any object with ``kind``/``classes`` attributes (TaskSpec)."""
        if isinstance(obj, TaskInfo):
            return obj
        get = obj.get if isinstance(obj, Mapping) else (lambda k, d=None: getattr(obj, k, d))
        return cls(
            name=str(get("name", name) or name),
            kind=str(get("kind")),
            classes=tuple(str(c) for c in (get("classes", ()) or ())),
            base_classes=tuple(str(c) for c in (get("base_classes", ()) or ())),
            novel_classes=tuple(str(c) for c in (get("novel_classes", ()) or ())),
        )


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` divided by their L2 norm (float32; zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, eps)


def _as_float_matrix(name: str, value: Any, rows: int | None = None) -> np.ndarray:
    arr = _to_numpy(value).astype(np.float32, copy=False)
    if arr.ndim != 2:
        raise EmbeddingSetError(f"{name} must be 2-D (rows, dim), got shape {arr.shape}")
    if rows is not None and arr.shape[0] != rows:
        raise EmbeddingSetError(f"{name} has {arr.shape[0]} rows, expected {rows}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise EmbeddingSetError(f"{name} has {int(bad.sum())} rows with NaN/inf values (first rows: {first})")
    return np.ascontiguousarray(arr)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass
class EmbeddingSet:
    """Embeddings of one split (see the module docstring for shapes and meaning)."""

    image_emb: np.ndarray
    text_emb: np.ndarray
    caption_to_image: np.ndarray
    image_ids: list[str]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    label_mask: dict[str, np.ndarray] = field(default_factory=dict)
    image_features: np.ndarray | None = None
    text_features: np.ndarray | None = None
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    texts: list[str] | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        image_emb: Any,
        text_emb: Any | None = None,
        caption_to_image: Any | None = None,
        image_ids: Sequence[str] | None = None,
        labels: Mapping[str, Any] | None = None,
        tasks: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> EmbeddingSet:
        """Wrap arrays exported from any model (numpy or torch).

        ``text_emb`` defaults to an empty (0, D) array; ``caption_to_image`` defaults to
        ``arange(N_txt)`` (one caption per image, in image order) when N_txt == N_img;
        ``image_ids`` default to ``"0", "1", …``; ``tasks`` maps task name to a dict/TaskSpec
        with ``kind`` and ``classes`` and is stored in ``meta["tasks"]``.
        """
        img = _to_numpy(image_emb)
        txt = np.zeros((0, img.shape[1] if img.ndim == 2 else 0), np.float32) if text_emb is None else _to_numpy(text_emb)
        if caption_to_image is None:
            if len(txt) not in (0, len(img)):
                raise EmbeddingSetError(
                    f"caption_to_image is required when the number of captions ({len(txt)}) "
                    f"differs from the number of images ({len(img)})"
                )
            caption_to_image = np.arange(len(txt))
        ids = [str(i) for i in range(len(img))] if image_ids is None else [str(i) for i in image_ids]
        meta = dict(kwargs.pop("meta", {}) or {})
        if tasks is not None:
            meta["tasks"] = {name: TaskInfo.from_obj(name, spec).to_dict() for name, spec in tasks.items()}
        return cls(
            image_emb=img,
            text_emb=txt,
            caption_to_image=_to_numpy(caption_to_image),
            image_ids=ids,
            labels={k: _to_numpy(v) for k, v in (labels or {}).items()},
            meta=meta,
            **kwargs,
        )

    def validate(self) -> None:
        """Check shapes, dtypes and finiteness; convert to the canonical dtypes in place."""
        self.image_emb = _as_float_matrix("image_emb", self.image_emb)
        n_img, dim = self.image_emb.shape
        self.text_emb = _as_float_matrix("text_emb", self.text_emb)
        if len(self.text_emb) and self.text_emb.shape[1] != dim:
            raise EmbeddingSetError(f"text_emb has dim {self.text_emb.shape[1]}, image_emb has dim {dim}")
        c2i = _to_numpy(self.caption_to_image)
        if c2i.ndim != 1 or len(c2i) != len(self.text_emb):
            raise EmbeddingSetError(f"caption_to_image must have shape ({len(self.text_emb)},), got {c2i.shape}")
        if len(c2i) and not np.issubdtype(c2i.dtype, np.integer):
            raise EmbeddingSetError(f"caption_to_image must be integer, got {c2i.dtype}")
        c2i = c2i.astype(np.int64, copy=False)
        if len(c2i) and (c2i.min() < 0 or c2i.max() >= n_img):
            bad = np.flatnonzero((c2i < 0) | (c2i >= n_img))[:5].tolist()
            raise EmbeddingSetError(f"caption_to_image points outside [0, {n_img}) at captions {bad}")
        self.caption_to_image = c2i
        self.image_ids = [str(i) for i in self.image_ids]
        if len(self.image_ids) != n_img:
            raise EmbeddingSetError(f"image_ids has {len(self.image_ids)} entries, image_emb has {n_img} rows")
        if len(set(self.image_ids)) != n_img:
            seen: set[str] = set()
            dup = next(i for i in self.image_ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise EmbeddingSetError(f"image_ids are not unique (e.g. {dup!r})")
        if self.texts is not None and len(self.texts) != len(self.text_emb):
            raise EmbeddingSetError(f"texts has {len(self.texts)} entries, text_emb has {len(self.text_emb)} rows")
        for name, arr in list(self.labels.items()):
            arr = _to_numpy(arr)
            if arr.shape[0] != n_img:
                raise EmbeddingSetError(f"labels[{name!r}] has {arr.shape[0]} rows, expected {n_img}")
            self.labels[name] = arr
        for name, arr in list(self.label_mask.items()):
            arr = _to_numpy(arr).astype(bool)
            if name not in self.labels or arr.shape != self.labels[name].shape:
                raise EmbeddingSetError(f"label_mask[{name!r}] must match labels[{name!r}] in shape")
            self.label_mask[name] = arr
        for name, arr in list(self.logits.items()):
            arr = _to_numpy(arr).astype(np.float32)
            if arr.ndim == 1:
                arr = arr[:, None]
            self.logits[name] = _as_float_matrix(f"logits[{name!r}]", arr, rows=n_img)
        if self.image_features is not None:
            self.image_features = _as_float_matrix("image_features", self.image_features, rows=n_img)
        if self.text_features is not None:
            self.text_features = _as_float_matrix("text_features", self.text_features, rows=len(self.text_emb))
        for name, spec in (self.meta.get("tasks") or {}).items():
            TaskInfo.from_obj(name, spec)  # raises on a bad spec
        for name in self.labels:
            self.check_labels(name)

    def check_labels(self, name: str) -> None:
        """Multilabel labels are 0 or 1 wherever annotated (finite and not masked out by ``label_mask``).

        Values such as CheXpert's −1 (uncertain) or a 2 would otherwise be scored silently (as a
        negative / a positive); the user maps them to 0/1, or marks them unannotated (NaN or a False
        ``label_mask`` entry). Class-index labels are checked by the metrics that use them.
        """
        arr = np.asarray(self.labels[name])
        spec = (self.meta.get("tasks") or {}).get(name)
        info = TaskInfo.from_obj(name, spec) if spec is not None else None
        if (info.kind if info is not None else ("multilabel" if arr.ndim == 2 else None)) != "multilabel":
            return
        if arr.ndim != 2:
            raise EmbeddingSetError(f"labels[{name!r}] (multilabel) must be 2-D (images, classes), got {arr.shape}")
        values = arr.astype(np.float64, copy=False)
        annotated = np.isfinite(values)
        mask = self.label_mask.get(name)
        if mask is not None:
            annotated &= np.asarray(mask, dtype=bool).reshape(values.shape)
        bad = annotated & (values != 0) & (values != 1)
        if not bad.any():
            return
        rows = np.flatnonzero(bad.any(axis=1))
        shown = ", ".join(f"{int(r)} ({self.image_ids[int(r)]!r})" for r in rows[:5])
        shown += f", … ({len(rows)} in total)" if len(rows) > 5 else ""
        row, col = (int(i) for i in np.argwhere(bad)[0])
        cls = info.classes[col] if info is not None and col < len(info.classes) else str(col)
        raise EmbeddingSetError(
            f"labels[{name!r}] (multilabel): values must be 0 or 1 where annotated (NaN or label_mask = "
            f"unannotated); rows {shown} have others, first row {row}, class {col} ({cls}) = {values[row, col]:g}. "
            f"Map such labels (e.g. CheXpert's -1 = uncertain) explicitly, or mark them unannotated"
        )

    # ------------------------------------------------------------------ accessors
    @property
    def num_images(self) -> int:
        return int(self.image_emb.shape[0])

    @property
    def num_texts(self) -> int:
        return int(self.text_emb.shape[0])

    @property
    def dim(self) -> int:
        return int(self.image_emb.shape[1])

    def task(self, name: str) -> TaskInfo:
        """The TaskInfo of label column ``name`` (from ``meta["tasks"]``)."""
        tasks = self.meta.get("tasks") or {}
        if name not in tasks:
            raise EmbeddingSetError(f"no task spec for {name!r} in meta['tasks'] (known: {sorted(tasks)})")
        return TaskInfo.from_obj(name, tasks[name])

    @property
    def task_names(self) -> list[str]:
        return [name for name in (self.meta.get("tasks") or {}) if name in self.labels]

    def subset(self, image_index: Sequence[int] | np.ndarray) -> EmbeddingSet:
        """The images at ``image_index`` (in that order) with their captions, re-indexed."""
        idx = np.asarray(image_index, dtype=np.int64)
        remap = np.full(self.num_images, -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        keep = np.flatnonzero(remap[self.caption_to_image] >= 0)
        return EmbeddingSet(
            image_emb=self.image_emb[idx],
            text_emb=self.text_emb[keep],
            caption_to_image=remap[self.caption_to_image[keep]],
            image_ids=[self.image_ids[i] for i in idx],
            labels={k: v[idx] for k, v in self.labels.items()},
            label_mask={k: v[idx] for k, v in self.label_mask.items()},
            image_features=None if self.image_features is None else self.image_features[idx],
            text_features=None if self.text_features is None else self.text_features[keep],
            logits={k: v[idx] for k, v in self.logits.items()},
            meta=dict(self.meta),
            texts=None if self.texts is None else [self.texts[i] for i in keep],
        )

    # ------------------------------------------------------------------ I/O
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``embeddings.safetensors`` + ``embeddings.json`` into ``directory`` (atomically)."""
        from safetensors.numpy import save as st_save

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {
            "image_emb": self.image_emb,
            "text_emb": self.text_emb,
            "caption_to_image": self.caption_to_image,
        }
        if self.image_features is not None:
            tensors["image_features"] = self.image_features
        if self.text_features is not None:
            tensors["text_features"] = self.text_features
        label_kinds: dict[str, str] = {}
        for prefix, group in (("labels", self.labels), ("label_mask", self.label_mask), ("logits", self.logits)):
            for i, arr in enumerate(group.values()):
                key = f"{prefix}.{i}"
                if arr.dtype == bool:
                    arr = arr.astype(np.uint8)
                    label_kinds[key] = "bool"
                tensors[key] = np.ascontiguousarray(arr)
        atomic_write_bytes(out / _TENSORS_FILE, st_save(tensors))
        atomic_write_json(
            out / _META_FILE,
            {
                "format_version": EMBEDDINGS_FORMAT_VERSION,
                "image_ids": self.image_ids,
                "texts": self.texts,
                "labels": list(self.labels),
                "label_mask": list(self.label_mask),
                "logits": list(self.logits),
                "bool_arrays": label_kinds,
                "meta": self.meta,
            },
        )
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> EmbeddingSet:
        """Read a directory written by :meth:`save`."""
        from safetensors.numpy import load_file

        src = Path(directory)
        for name in (_TENSORS_FILE, _META_FILE):
            if not (src / name).is_file():
                raise EmbeddingSetError(f"{src}: missing {name} (not an EmbeddingSet directory)")
        try:
            info = read_json(src / _META_FILE)
        except (OSError, ValueError) as exc:  # JSONDecodeError: a truncated or corrupt file
            raise EmbeddingSetError(f"{src / _META_FILE}: corrupt or truncated ({exc})") from None
        if not isinstance(info, dict):
            raise EmbeddingSetError(f"{src / _META_FILE}: corrupt (expected a JSON object)")
        if info.get("format_version") != EMBEDDINGS_FORMAT_VERSION:
            raise EmbeddingSetError(f"{src}: unsupported format_version {info.get('format_version')!r}")
        try:
            arrays = load_file(str(src / _TENSORS_FILE))
        except Exception as exc:  # SafetensorError: truncated or corrupt
            raise EmbeddingSetError(f"{src / _TENSORS_FILE}: corrupt or truncated ({exc})") from None
        bools = info.get("bool_arrays", {})

        def group(prefix: str) -> dict[str, np.ndarray]:
            out = {}
            for i, name in enumerate(info.get(prefix, [])):
                key = f"{prefix}.{i}"
                arr = arrays[key]
                out[name] = arr.astype(bool) if bools.get(key) == "bool" else arr
            return out

        return cls(
            image_emb=arrays["image_emb"],
            text_emb=arrays["text_emb"],
            caption_to_image=arrays["caption_to_image"],
            image_ids=list(info["image_ids"]),
            labels=group("labels"),
            label_mask=group("label_mask"),
            image_features=arrays.get("image_features"),
            text_features=arrays.get("text_features"),
            logits=group("logits"),
            meta=dict(info.get("meta") or {}),
            texts=info.get("texts"),
        )


def check_nonzero_rows(x: np.ndarray, what: str, names: Sequence[str] | Callable[[int], str] | None = None) -> None:
    """Raise :class:`EmbeddingSetError` naming the rows of ``x`` whose L2 norm is 0.

    A zero vector has no direction, so cosine similarity with it is undefined (normalising it
    would silently score it 0 against everything). ``what`` describes the rows (e.g.
    ``"image_emb"``); ``names`` (one per row, e.g. record ids, or a function of the row index)
    are quoted in the message.
    """
    norms = np.linalg.norm(np.asarray(x, dtype=np.float64), axis=-1)
    bad = np.flatnonzero(~(norms > 0))
    if len(bad):
        name_of = names if callable(names) else (None if names is None else names.__getitem__)
        shown = [f"{int(i)} ({name_of(int(i))!r})" if name_of is not None else str(int(i)) for i in bad[:5]]
        more = f", … ({len(bad)} in total)" if len(bad) > 5 else ""
        raise EmbeddingSetError(
            f"{what}: rows {', '.join(shown)}{more} have zero norm; cosine similarity is undefined for them "
            "(a failed encoding?) — remove these records or fix the embeddings"
        )


#: Arrays an ``.npz`` of precomputed embeddings may hold (``image`` required).
NPZ_ARRAYS = ("image", "text", "caption_to_image", "image_ids")


def load_embeddings(path: str | os.PathLike[str]) -> EmbeddingSet:
    """Precomputed embeddings: an EmbeddingSet directory, or an ``.npz`` file of arrays.

    ``.npz``: ``image`` (N, D) and optional ``text`` (N_txt, D) — paired rows (caption *i* belongs
    to image *i*) unless ``caption_to_image`` (N_txt,) says otherwise — and optional ``image_ids``
    (N,). Other arrays are an error naming them. ``meta["source"]`` records the file.
    """
    src = Path(path)
    if src.is_dir():
        return EmbeddingSet.load(src)
    if src.suffix != ".npz" or not src.is_file():
        raise EmbeddingSetError(f"{src}: not an EmbeddingSet directory or an .npz file of embeddings")
    try:
        with np.load(src, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise EmbeddingSetError(f"{src}: cannot read the .npz ({exc})") from None
    unknown = sorted(set(arrays) - set(NPZ_ARRAYS))
    if "image" not in arrays or unknown:
        raise EmbeddingSetError(f"{src}: an .npz of embeddings holds {list(NPZ_ARRAYS)} ('image' required); "
                                f"found {sorted(arrays)}")
    ids = arrays.get("image_ids")
    try:
        return EmbeddingSet.from_arrays(
            arrays["image"], arrays.get("text"), caption_to_image=arrays.get("caption_to_image"),
            image_ids=None if ids is None else [str(i) for i in ids.tolist()],
            meta={"source": str(src), "kind": "npz"},
        )
    except EmbeddingSetError as exc:
        raise EmbeddingSetError(f"{src}: {exc}") from None
