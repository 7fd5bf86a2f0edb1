"""The manifest: one table of records (id, image, texts, labels per task, group, split, fold).

A :class:`Manifest` is a :class:`pandas.DataFrame` of records plus task specifications
(:class:`TaskSpec`) plus ``root``, the directory that image paths are relative to. See the
"Manifest" contract in ``docs/DESIGN.md`` for the column table.

Reading and validation are columnar: list columns are converted to Arrow arrays in one call and
checked with Arrow compute kernels; per-record Python runs only to describe records that already
failed a vectorised check, so a manifest of millions of rows validates in seconds.

Representation in memory
    * ``texts``, multilabel ``labels.<task>``, ``label_mask.<task>`` and ``text_labels.<task>``
      cells are sequences (Python lists, or 1-D NumPy arrays after reading Parquet). Use
      :func:`as_list` when a plain list is needed.
    * multiclass / ordinal labels are integers; ``-1`` (or null) means "not annotated".
    * regression labels are floats; NaN (or null) means "not annotated".
    * a null multilabel cell means "this record has no labels for this task" (mask all false).
    * ``label_mask.<task>`` is a list of bools (one per class) for multilabel tasks; for the
      other kinds it is an optional scalar bool.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medvl.utils.errors import UserInputError
from medvl.utils.io import atomic_open, atomic_write_json, read_json

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_TYPES",
    "SPLITS",
    "TASK_KINDS",
    "Manifest",
    "ManifestError",
    "ManifestIssue",
    "TaskSpec",
    "ValidationReport",
    "as_list",
    "concat_manifests",
    "infer_image_type",
    "infer_tasks",
    "list_column_to_matrix",
    "read_manifest",
    "sidecar_path",
    "validate_manifest",
    "write_manifest",
]

#: Version of the on-disk layout, stored in the Parquet metadata under ``medvl``.
FORMAT_VERSION = 1
TASK_KINDS: tuple[str, ...] = ("multilabel", "multiclass", "ordinal", "regression")
TaskKind = Literal["multilabel", "multiclass", "ordinal", "regression"]
#: Allowed values of the ``split`` column ("" = unassigned).
SPLITS: tuple[str, ...] = ("train", "val", "test", "")
#: Allowed values of the ``image_type`` column ("" = infer from the extension).
IMAGE_TYPES: tuple[str, ...] = ("image", "dicom", "array", "feature_bag", "")

_EXTENSION_TYPES: dict[str, str] = {
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".bmp": "image",
    ".tif": "image",
    ".tiff": "image",
    ".gif": "image",
    ".webp": "image",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".npy": "array",
    ".pt": "feature_bag",
    ".pth": "feature_bag",
    ".h5": "feature_bag",
    ".hdf5": "feature_bag",
    ".safetensors": "feature_bag",
}

LABEL_PREFIX = "labels."
MASK_PREFIX = "label_mask."
TEXT_LABEL_PREFIX = "text_labels."
_METADATA_KEY = b"medvl"

#: Columns every manifest has after construction, in canonical order, with their fill values.
_CORE_DEFAULTS: dict[str, Any] = {
    "image_type": "",
    "split": "",
    "fold": -1,
    "source": "",
}
_STRING_COLUMNS: tuple[str, ...] = ("id", "image", "image_type", "group", "split", "source")


class ManifestError(UserInputError, ValueError):
    """A manifest that cannot be read or does not validate; the message names records and columns."""


# --------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskSpec:
    """One label task.

    Attributes:
        name: task name; its labels live in column ``labels.<name>``.
        kind: ``multilabel`` (vector of 0/1 per class), ``multiclass`` (class index),
            ``ordinal`` (grade index; ``classes`` are the grade names in order) or
            ``regression`` (a float; ``classes`` may be empty).
        classes: class / grade names, in label-vector order.
        base_classes: classes used for label supervision (default: all classes not novel).
        novel_classes: classes held out from supervision (zero-shot generalisation studies).
    """

    name: str
    kind: TaskKind
    classes: tuple[str, ...] = ()
    base_classes: tuple[str, ...] | None = None
    novel_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "novel_classes", tuple(str(c) for c in self.novel_classes))
        if self.base_classes is not None:
            object.__setattr__(self, "base_classes", tuple(str(c) for c in self.base_classes))
        if not self.name or not isinstance(self.name, str):
            raise ManifestError(f"task name must be a non-empty string, got {self.name!r}")
        if self.kind not in TASK_KINDS:
            raise ManifestError(f"task {self.name!r}: kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if self.kind != "regression" and not self.classes:
            raise ManifestError(f"task {self.name!r} ({self.kind}) needs at least one class name")
        if len(set(self.classes)) != len(self.classes):
            raise ManifestError(f"task {self.name!r}: duplicate class names in {list(self.classes)}")
        known = set(self.classes)
        for label, group in (("base_classes", self.base_classes or ()), ("novel_classes", self.novel_classes)):
            unknown = [c for c in group if c not in known]
            if unknown:
                raise ManifestError(f"task {self.name!r}: {label} not in classes: {unknown}")
        if self.base_classes is not None:
            overlap = set(self.base_classes) & set(self.novel_classes)
            if overlap:
                raise ManifestError(f"task {self.name!r}: classes both base and novel: {sorted(overlap)}")

    @property
    def num_classes(self) -> int:
        """Number of classes (1 for regression)."""
        return len(self.classes) if self.kind != "regression" else 1

    @property
    def base(self) -> tuple[str, ...]:
        """Base classes (explicit, or every class that is not novel)."""
        if self.base_classes is not None:
            return self.base_classes
        novel = set(self.novel_classes)
        return tuple(c for c in self.classes if c not in novel)

    @property
    def base_indices(self) -> list[int]:
        """Indices (into ``classes``) of the base classes, in class order."""
        base = set(self.base)
        return [i for i, c in enumerate(self.classes) if c in base]

    @property
    def novel_indices(self) -> list[int]:
        """Indices (into ``classes``) of the novel classes, in class order."""
        novel = set(self.novel_classes)
        return [i for i, c in enumerate(self.classes) if c in novel]

    @property
    def column(self) -> str:
        """The label column, ``labels.<name>``."""
        return LABEL_PREFIX + self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the sidecar / Parquet metadata entry)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": list(self.classes),
            "base_classes": None if self.base_classes is None else list(self.base_classes),
            "novel_classes": list(self.novel_classes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        allowed = {"name", "kind", "classes", "base_classes", "novel_classes"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ManifestError(f"task spec {data.get('name')!r}: unknown keys {unknown}")
        if "name" not in data or "kind" not in data:
            raise ManifestError(f"task spec needs 'name' and 'kind', got keys {sorted(data)}")
        base = data.get("base_classes")
        return cls(
            name=str(data["name"]),
            kind=cast(TaskKind, data["kind"]),
            classes=tuple(data.get("classes") or ()),
            base_classes=None if base is None else tuple(base),
            novel_classes=tuple(data.get("novel_classes") or ()),
        )


def _normalise_tasks(tasks: Mapping[str, TaskSpec] | Iterable[TaskSpec] | None) -> dict[str, TaskSpec]:
    if tasks is None:
        return {}
    items = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
    out: dict[str, TaskSpec] = {}
    for spec in items:
        if not isinstance(spec, TaskSpec):
            raise ManifestError(f"tasks must be TaskSpec objects, got {type(spec).__name__}")
        if spec.name in out:
            raise ManifestError(f"task {spec.name!r} given twice")
        out[spec.name] = spec
    if isinstance(tasks, Mapping):
        for key, spec in tasks.items():
            if key != spec.name:
                raise ManifestError(f"tasks mapping key {key!r} differs from TaskSpec.name {spec.name!r}")
    return out


# --------------------------------------------------------------------------------------------- helpers


def as_list(value: Any) -> list[Any]:
    """A list-valued cell (list, tuple or 1-D ndarray) as a Python list; null → ``[]``."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return cast(list[Any], value.tolist())
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, float) and np.isnan(value):
        return []
    raise TypeError(f"expected a list, got {type(value).__name__}: {value!r}")


def infer_image_type(paths: pd.Series | Sequence[str] | np.ndarray) -> np.ndarray:
    """Image type per path from its extension (``""`` where unknown), vectorised with Arrow."""
    values = paths.to_numpy(dtype=object) if isinstance(paths, pd.Series) else np.asarray(paths, dtype=object)
    arr = pa.array(values, type=pa.string(), from_pandas=True)
    ext = pc.struct_field(pc.extract_regex(pc.utf8_lower(arr), r"(?P<ext>\.[a-z0-9]+)$"), [0])
    keys = pa.array(list(_EXTENSION_TYPES), type=pa.string())
    kinds = np.array([*_EXTENSION_TYPES.values(), ""], dtype=object)
    index = pc.fill_null(pc.index_in(ext, value_set=keys), len(keys))
    return kinds[np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64)]


def _show(value: Any, width: int = 60) -> str:
    """Short repr of a cell for error messages (NumPy scalars shown as Python values)."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _is_list_cell(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


# --------------------------------------------------------------------------------------------- manifest


class Manifest:
    """Records (a DataFrame) + task specs + the image root.

    Args:
        records: one row per record; must have ``id`` and ``image``. Missing optional columns
            are filled: ``texts`` → ``[]``, ``image_type`` → ``""`` (infer from the
            extension), ``group`` → the record id (each record its own group), ``split`` →
            ``""``, ``fold`` → ``-1``, ``source`` → ``""``.
        tasks: the label tasks (``TaskSpec`` objects, or a name → spec mapping).
        root: directory image paths are relative to (``None``: unknown; file access needs it).

    The constructor does not validate content; call :func:`validate_manifest`.
    """

    def __init__(
        self,
        records: pd.DataFrame,
        tasks: Mapping[str, TaskSpec] | Iterable[TaskSpec] | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(records, pd.DataFrame):
            raise ManifestError(f"records must be a pandas DataFrame, got {type(records).__name__}")
        missing = [c for c in ("id", "image") if c not in records.columns]
        if missing:
            raise ManifestError(f"manifest is missing required column(s) {missing}")
        df = records.reset_index(drop=True)
        if "texts" not in df.columns:
            df["texts"] = pd.Series([[] for _ in range(len(df))], dtype=object)
        if "group" not in df.columns:
            df["group"] = df["id"]
        for column, default in _CORE_DEFAULTS.items():
            if column not in df.columns:
                df[column] = default
        self.records: pd.DataFrame = df
        self.tasks: dict[str, TaskSpec] = _normalise_tasks(tasks)
        self.root: Path | None = None if root is None else Path(root)

    # ---- construction helpers
    @classmethod
    def from_records(
        cls,
        rows: Iterable[Mapping[str, Any]],
        tasks: Mapping[str, TaskSpec] | Iterable[TaskSpec] | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> Manifest:
        """Build from an iterable of dicts (one per record)."""
        return cls(pd.DataFrame.from_records(list(rows)), tasks, root)

    # ---- basic access
    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} records, tasks={list(self.tasks)}, root={self.root})"

    @property
    def ids(self) -> np.ndarray:
        """Record ids, shape (N,), object array of str."""
        return self.records["id"].astype(str).to_numpy(dtype=object)

    def task(self, name: str) -> TaskSpec:
        """The spec of task ``name`` (error listing the known tasks)."""
        try:
            return self.tasks[name]
        except KeyError:
            raise ManifestError(f"unknown task {name!r}; manifest has {sorted(self.tasks)}") from None

    def image_types(self) -> np.ndarray:
        """Effective image type per record (explicit ``image_type`` or inferred), shape (N,)."""
        explicit = self.records["image_type"].fillna("").astype(str).to_numpy(dtype=object)
        inferred = infer_image_type(self.records["image"].fillna("").astype(str))
        return np.where(explicit == "", inferred, explicit)

    def resolve_path(self, image: str) -> Path:
        """Absolute path of an image reference (needs ``root``)."""
        if self.root is None:
            raise ManifestError("manifest has no root; pass root= to read_manifest or Manifest")
        return self.root / image

    # ---- labels
    def label_matrix(self, task: str) -> np.ndarray:
        """Labels of ``task`` as one array.

        Returns:
            multilabel: float32 (N, C), 0 where unannotated (see :meth:`label_mask`);
            multiclass / ordinal: int64 (N,), -1 where unannotated;
            regression: float32 (N,), NaN where unannotated.
        """
        spec = self.task(task)
        column = self._label_column(spec)
        if spec.kind == "multilabel":
            values, present = list_column_to_matrix(column, spec.num_classes, np.float32, spec.column)
            values[~present] = 0.0
            return np.nan_to_num(values, nan=0.0)
        numeric = pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        if spec.kind == "regression":
            return numeric.astype(np.float32)
        return np.where(np.isnan(numeric), -1, numeric).astype(np.int64)

    def label_mask(self, task: str) -> np.ndarray:
        """Which labels of ``task`` are annotated.

        Returns:
            multilabel: bool (N, C) = ``label_mask.<task>`` (all true when the column is absent)
            AND the record has a label vector AND the value is finite;
            other kinds: bool (N,) = label present (not -1 / NaN / null) AND the optional
            scalar ``label_mask.<task>``.
        """
        spec = self.task(task)
        column = self._label_column(spec)
        mask_col = MASK_PREFIX + spec.name
        n = len(self)
        if spec.kind == "multilabel":
            values, present = list_column_to_matrix(column, spec.num_classes, np.float32, spec.column)
            mask = present[:, None] & np.isfinite(values)
            if mask_col in self.records.columns:
                given, given_present = list_column_to_matrix(
                    self.records[mask_col], spec.num_classes, np.bool_, mask_col
                )
                given[~given_present] = True
                mask &= given.astype(bool)
            return mask
        numeric = pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        mask = np.isfinite(numeric)
        if spec.kind != "regression":
            mask &= numeric >= 0
        if mask_col in self.records.columns:
            extra = self.records[mask_col].fillna(True).to_numpy(dtype=bool)
            mask &= extra
        assert mask.shape == (n,)
        return mask

    def _label_column(self, spec: TaskSpec) -> pd.Series:
        if spec.column not in self.records.columns:
            raise ManifestError(f"task {spec.name!r}: column {spec.column!r} is missing")
        return self.records[spec.column]

    # ---- subsets and views
    def subset(self, mask: np.ndarray | pd.Series | Sequence[bool] | Sequence[int]) -> Manifest:
        """A new manifest with the selected rows (boolean mask of length N, or integer positions)."""
        arr = np.asarray(mask)
        if arr.dtype == bool:
            if arr.shape != (len(self),):
                raise ManifestError(f"subset mask has shape {arr.shape}, expected ({len(self)},)")
            rows = self.records.loc[arr]
        else:
            rows = self.records.iloc[arr.astype(np.int64)]
        return Manifest(rows.reset_index(drop=True), self.tasks, self.root)

    def split(self, name: str) -> Manifest:
        """Records whose ``split`` equals ``name``."""
        if name not in SPLITS:
            raise ManifestError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.subset((self.records["split"].fillna("").astype(str) == name).to_numpy())

    def fold(self, k: int, *, exclude: bool = False) -> Manifest:
        """Records in fold ``k`` (or, with ``exclude``, every record with an assigned fold other than k)."""
        folds = self.records["fold"].to_numpy()
        mask = (folds != k) & (folds >= 0) if exclude else folds == k
        return self.subset(mask)

    def copy(self) -> Manifest:
        """A copy whose records can be modified independently."""
        return Manifest(self.records.copy(), self.tasks, self.root)

    # ---- provenance
    def to_arrow(self) -> pa.Table:
        """Canonical Arrow table (fixed types for the known columns, canonical column order)."""
        return _to_arrow(self)

    def hash(self) -> str:
        """sha256 of the content: records (canonical Arrow form, in row order) and task specs.

        Independent of the file format the manifest was read from and of ``root``.
        """
        import hashlib

        table = self.to_arrow().replace_schema_metadata(None).combine_chunks()
        digest = hashlib.sha256()
        # stream the IPC bytes into the digest batch by batch instead of building one big buffer
        with pa.PythonFile(_DigestSink(digest), mode="w") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=65536)
        digest.update(json.dumps([s.to_dict() for s in self.tasks.values()], sort_keys=True).encode())
        return digest.hexdigest()


class _DigestSink(io.RawIOBase):
    """A write-only file object that feeds everything written to a hash."""

    def __init__(self, digest: Any) -> None:
        self._digest = digest

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._digest.update(view)
        return view.nbytes


# --------------------------------------------------------------------------------------------- arrow


def list_column_to_matrix(
    column: pd.Series | pa.Array, width: int, dtype: type[np.generic], name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(N, width) array from a list column, and a (N,) bool 'cell present' vector (vectorised).

    Null cells become zeros (``present`` False); a cell of another length is an error.
    """
    arr = column if isinstance(column, pa.Array) else _arrow_list(column, name)
    n = len(arr)
    present = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    lengths = pc.fill_null(pc.list_value_length(arr), width).to_numpy(zero_copy_only=False)
    if (lengths != width).any():
        bad = int(np.flatnonzero(lengths != width)[0])
        raise ManifestError(f"{name}: row {bad} has {lengths[bad]} values, expected {width}")
    try:
        arr = arr.cast(pa.list_(pa.float64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ManifestError(f"{name}: list values are not numeric ({exc})") from None
    filled = pc.fill_null(arr, pa.scalar([0.0] * width, type=pa.list_(pa.float64())))
    flat = np.asarray(pc.list_flatten(filled).to_numpy(zero_copy_only=False), dtype=np.float64)
    matrix = flat.reshape(n, width)
    if dtype is np.bool_:
        return matrix != 0, present
    return matrix.astype(dtype), present


def _arrow_list(column: pd.Series, name: str) -> pa.Array:
    """A list column as an Arrow list array (inferred element type), or a ManifestError."""
    try:
        arr = pa.array(column.to_numpy(dtype=object), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise ManifestError(f"{name}: cells are not lists of one type ({exc})") from None
    if pa.types.is_null(arr.type):
        arr = pa.array([None] * len(arr), type=pa.list_(pa.float64()))
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
        raise ManifestError(f"{name}: expected list cells, got {arr.type}")
    return arr


def _canonical_types(manifest: Manifest) -> dict[str, pa.DataType]:
    types: dict[str, pa.DataType] = {
        "id": pa.string(),
        "image": pa.string(),
        "image_type": pa.string(),
        "texts": pa.list_(pa.string()),
        "group": pa.string(),
        "split": pa.string(),
        "fold": pa.int64(),
        "source": pa.string(),
    }
    for spec in manifest.tasks.values():
        if spec.kind == "multilabel":
            types[spec.column] = pa.list_(pa.float32())
            types[MASK_PREFIX + spec.name] = pa.list_(pa.bool_())
            types[TEXT_LABEL_PREFIX + spec.name] = pa.list_(pa.list_(pa.float32()))
        elif spec.kind == "regression":
            types[spec.column] = pa.float64()
            types[MASK_PREFIX + spec.name] = pa.bool_()
            types[TEXT_LABEL_PREFIX + spec.name] = pa.list_(pa.float64())
        else:
            types[spec.column] = pa.int64()
            types[MASK_PREFIX + spec.name] = pa.bool_()
            types[TEXT_LABEL_PREFIX + spec.name] = pa.list_(pa.int64())
    return types


def _column_order(columns: Iterable[str], manifest: Manifest) -> list[str]:
    cols = list(columns)
    first = ["id", "image", "image_type", "texts"]
    for spec in manifest.tasks.values():
        first += [spec.column, MASK_PREFIX + spec.name, TEXT_LABEL_PREFIX + spec.name]
    first += ["group", "split", "fold", "source"]
    ordered = [c for c in first if c in cols]
    return ordered + sorted(c for c in cols if c not in set(ordered))


def _to_arrow(manifest: Manifest) -> pa.Table:
    types = _canonical_types(manifest)
    df = manifest.records
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name in _column_order(df.columns, manifest):
        series = df[name]
        target = types.get(name)
        try:
            if target is not None and pa.types.is_integer(target):
                # multiclass labels may be float with NaN (null = unannotated) → -1
                numeric = pd.to_numeric(series, errors="raise")
                values = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
                arr = pa.array(np.where(np.isnan(values), -1, values).astype(np.int64))
            elif target is not None:
                arr = pa.array(series.to_numpy(dtype=object), type=target, from_pandas=True)
            elif len(series) == 0 and series.dtype == object:
                arr = pa.array([], type=pa.string())  # untyped empty column: canonical string
            else:
                arr = pa.Array.from_pandas(series)
                if pa.types.is_large_string(arr.type):  # pandas' str dtype; canonical form is string
                    arr = arr.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"column {name!r} cannot be stored as {target}: {exc}; run validate_manifest for details"
            ) from None
        arrays.append(arr)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


# --------------------------------------------------------------------------------------------- I/O


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The task-spec sidecar of a CSV/JSONL manifest: ``<dir>/<stem>.tasks.json``."""
    p = Path(path)
    return p.with_name(p.stem + ".tasks.json")


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise ManifestError(f"{path}: unknown manifest format {suffix!r} (use .parquet, .csv or .jsonl)")


def _metadata(manifest: Manifest, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "tasks": [s.to_dict() for s in manifest.tasks.values()],
        "columns": _column_order(manifest.records.columns, manifest),
    }
    if manifest.root is not None:
        root = manifest.root.resolve()
        try:
            meta["root"] = os.path.relpath(root, path.parent.resolve())
        except ValueError:  # different drives on Windows
            meta["root"] = str(root)
    return meta


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write ``manifest`` atomically; the format follows the extension.

    Parquet (the canonical format) keeps task specs, the format version and the root (relative
    to the file's directory) in the key-value metadata under ``medvl``. CSV (list cells as
    JSON) and JSONL (native JSON arrays) write the same information to ``<stem>.tasks.json``.
    """
    target = Path(path)
    fmt = _format_of(target)
    table = manifest.to_arrow()
    meta = _metadata(manifest, target)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = table.replace_schema_metadata({_METADATA_KEY: json.dumps(meta).encode("utf-8")})
        with atomic_open(target, "wb", encoding=None) as handle:
            pq.write_table(table, handle)
        return target
    df = table.to_pandas()
    list_cols = [f.name for f in table.schema if pa.types.is_list(f.type)]
    if fmt == "csv":
        for col in list_cols:
            df[col] = _json_encode_column(table.column(col))
        with atomic_open(target, "w") as handle:
            df.to_csv(handle, index=False)
    else:
        with atomic_open(target, "w") as handle:
            for chunk in _jsonl_lines(table):
                handle.write(chunk)
    atomic_write_json(sidecar_path(target), meta)
    return target


def _json_encode_column(column: pa.ChunkedArray) -> list[str | None]:
    return [None if v is None else json.dumps(v) for v in column.to_pylist()]


def _jsonl_lines(table: pa.Table, batch_rows: int = 65536) -> Iterable[str]:
    for batch in table.to_batches(max_chunksize=batch_rows):
        rows = batch.to_pylist()
        yield "".join(json.dumps(_nan_to_none(r), allow_nan=False) + "\n" for r in rows)


def _nan_to_none(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}


def _decode_json_lists(series: pd.Series, name: str) -> pd.Series:
    """Decode JSON-string list cells in one ``json.loads`` call; other cells are kept as they are."""
    values = series.to_numpy(dtype=object)
    is_text = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    if not is_text.any():
        return series
    text_rows = np.flatnonzero(is_text)
    stripped = pc.utf8_trim_whitespace(pa.array(values[is_text].tolist(), type=pa.string()))
    empty = np.asarray(pc.equal(stripped, "").to_numpy(zero_copy_only=False), dtype=bool)
    looks_list = np.asarray(pc.starts_with(stripped, "[").to_numpy(zero_copy_only=False), dtype=bool)
    decodable = looks_list & ~empty
    out = values.copy()
    out[text_rows[empty]] = None
    if decodable.any():
        cells: list[str] = stripped.filter(pa.array(decodable)).to_pylist()
        try:
            decoded = json.loads("[" + ",".join(cells) + "]")
            if len(decoded) != len(cells):  # a cell such as "[1],[2]" would shift the others
                raise ValueError("cell count changed")
        except (json.JSONDecodeError, ValueError):
            decoded = []
            for text in cells:
                try:
                    decoded.append(json.loads(text))
                except json.JSONDecodeError:
                    decoded.append(text)  # left as a string; validation names the record
        decoded_arr = np.empty(len(decoded), dtype=object)
        decoded_arr[:] = decoded
        out[text_rows[decodable]] = decoded_arr
    return pd.Series(out, index=series.index, dtype=object, name=name)


def infer_tasks(records: pd.DataFrame) -> dict[str, TaskSpec]:
    """Task specs guessed from ``labels.<task>`` columns (when no sidecar/metadata exists).

    List cells → multilabel with classes ``"0".."C-1"``; integral numbers → multiclass with
    classes ``"0".."max"`` (ordinal cannot be told apart; give a sidecar); other numbers →
    regression.
    """
    tasks: dict[str, TaskSpec] = {}
    for col in records.columns:
        if not col.startswith(LABEL_PREFIX):
            continue
        name = col[len(LABEL_PREFIX) :]
        series = records[col]
        sample = series.dropna()
        first = sample.iloc[0] if len(sample) else None
        if first is not None and _is_list_cell(first):
            width = len(first)
            tasks[name] = TaskSpec(name, "multilabel", tuple(str(i) for i in range(max(width, 1))))
            continue
        numeric = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        finite = numeric[np.isfinite(numeric)]
        if finite.size and np.all(finite == np.round(finite)):
            top = int(finite.max())
            tasks[name] = TaskSpec(name, "multiclass", tuple(str(i) for i in range(max(top + 1, 1))))
        else:
            tasks[name] = TaskSpec(name, "regression")
    return tasks


def _tasks_from_meta(meta: Mapping[str, Any], source: str) -> dict[str, TaskSpec]:
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ManifestError(f"{source}: manifest format version {version!r} is newer than supported {FORMAT_VERSION}")
    tasks_raw = meta.get("tasks", [])
    if not isinstance(tasks_raw, list):
        raise ManifestError(f"{source}: 'tasks' must be a list of task specs")
    return _normalise_tasks([TaskSpec.from_dict(t) for t in tasks_raw])


def _resolve_root(path: Path, meta: Mapping[str, Any], root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root)
    stored = meta.get("root")
    if isinstance(stored, str) and stored:
        return (path.parent / stored).resolve()
    return path.parent.resolve()


def read_manifest(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Manifest:
    """Read a manifest from ``.parquet``, ``.csv`` or ``.jsonl``.

    Task specs come from the Parquet metadata, else the sidecar ``<stem>.tasks.json``, else
    :func:`infer_tasks`. ``root`` defaults to the stored root (relative to the file), else the
    file's directory. The result is not validated; call :func:`validate_manifest`.
    """
    source = Path(path)
    if not source.is_file():
        raise ManifestError(f"manifest not found: {source}")
    fmt = _format_of(source)
    meta: dict[str, Any] = {}
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(source)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ManifestError(f"{source}: not a readable Parquet file ({exc})") from None
        raw = (table.schema.metadata or {}).get(_METADATA_KEY)
        if raw is not None:
            meta = json.loads(raw.decode("utf-8"))
        df = table.replace_schema_metadata(None).to_pandas()
    elif fmt == "csv":
        try:
            df = pd.read_csv(source, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise ManifestError(f"{source}: not a readable CSV file ({exc})") from None
    else:
        df = _read_jsonl(source)
    sidecar = sidecar_path(source)
    if not meta and sidecar.is_file():
        meta = read_json(sidecar)
        if not isinstance(meta, dict):
            raise ManifestError(f"{sidecar}: expected a JSON object")
    for col in df.columns:
        if col == "texts" or col.startswith((LABEL_PREFIX, MASK_PREFIX, TEXT_LABEL_PREFIX)):
            df[col] = _decode_json_lists(df[col], col)
    tasks = _tasks_from_meta(meta, str(source)) if "tasks" in meta else infer_tasks(df)
    if len(df) == 0:  # an empty JSONL file has no columns to read
        raw_columns = meta.get("columns")
        stored: list[str] = [str(c) for c in raw_columns] if isinstance(raw_columns, list) else []
        for col in ["id", "image", "texts", *(spec.column for spec in tasks.values()), *stored]:
            if col not in df.columns:
                df[col] = pd.Series([], dtype=object)
    if fmt == "csv":
        df = _coerce_csv_scalars(df, tasks)
    if fmt != "parquet":
        for col in ("id", "group"):
            if col in df.columns:
                df[col] = df[col].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return Manifest(df, tasks, _resolve_root(source, meta, root))


def _read_jsonl(source: Path) -> pd.DataFrame:
    lines = [ln for ln in source.read_text(encoding="utf-8").splitlines() if ln.strip()]
    try:
        rows = json.loads("[" + ",".join(lines) + "]")
    except json.JSONDecodeError:
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{source}: line {number} is not valid JSON ({exc.msg})") from None
    bad = [i + 1 for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise ManifestError(f"{source}: line(s) {bad[:5]} are not JSON objects")
    df = pd.DataFrame.from_records(rows)
    # keep list / mixed columns as object; make scalar string columns plain str
    return df


def _coerce_csv_scalars(df: pd.DataFrame, tasks: Mapping[str, TaskSpec]) -> pd.DataFrame:
    """CSV cells are strings: parse ``fold``, scalar labels and scalar masks (bad cells kept for validation)."""
    numeric_cols = ["fold"] + [s.column for s in tasks.values() if s.kind != "multilabel"]
    for col in numeric_cols:
        if col not in df.columns:
            continue
        raw = df[col].astype(object)
        blank = raw.isna() | (raw.astype(str).str.strip() == "")
        parsed = pd.to_numeric(raw.where(~blank, None), errors="coerce")
        if (parsed.isna() & ~blank).any():
            continue  # keep the raw strings; validate_manifest names the bad records
        if col == "fold":
            df[col] = parsed.fillna(-1).astype(np.int64)
        else:
            df[col] = parsed.astype(np.float64)
    for spec in tasks.values():
        mask_col = MASK_PREFIX + spec.name
        if spec.kind != "multilabel" and mask_col in df.columns:
            raw = df[mask_col].astype(str).str.strip().str.lower()
            mapping = {"true": True, "1": True, "false": False, "0": False, "": None}
            if raw.isin(list(mapping)).all():
                df[mask_col] = raw.map(mapping).astype(object)
    for col in ("image_type", "split", "source"):
        if col in df.columns:
            df[col] = df[col].fillna("")
    return df


def concat_manifests(manifests: Sequence[Manifest], root: str | os.PathLike[str] | None = None) -> Manifest:
    """Stack manifests of several datasets into one (partial labels across datasets).

    Tasks are the union (a task present in several manifests must have the same spec). A
    record of a manifest without some task gets no label for it (null / -1 / NaN, so its
    mask is false). With ``root``, image paths are rewritten relative to it (every manifest
    root must lie inside it); without, all manifests must share one root. Set ``source``
    in each manifest to tell the datasets apart; duplicate ids are left for
    :func:`validate_manifest` to report.
    """
    if not manifests:
        raise ManifestError("concat_manifests needs at least one manifest")
    tasks: dict[str, TaskSpec] = {}
    for m in manifests:
        for name, spec in m.tasks.items():
            if name in tasks and tasks[name] != spec:
                raise ManifestError(f"task {name!r} differs between manifests: {tasks[name]} vs {spec}")
            tasks[name] = spec
    roots = {None if m.root is None else m.root.resolve() for m in manifests}
    frames: list[pd.DataFrame] = []
    if root is None:
        if len(roots) > 1:
            raise ManifestError(f"manifests have different roots {sorted(str(r) for r in roots)}; pass root=")
        target = next(iter(roots))
        frames = [m.records for m in manifests]
    else:
        target = Path(root).resolve()
        for m in manifests:
            if m.root is None:
                raise ManifestError("every manifest needs a root to be re-based onto root=")
            prefix = os.path.relpath(m.root.resolve(), target).replace(os.sep, "/")
            if prefix == ".." or prefix.startswith("../") or os.path.isabs(prefix):
                raise ManifestError(f"manifest root {m.root} is not inside {target}")
            frame = m.records.copy()
            if prefix != ".":
                frame["image"] = prefix + "/" + frame["image"].astype(str)
            frames.append(frame)
    records = pd.concat(frames, ignore_index=True, sort=False)
    for spec in tasks.values():  # records from manifests without the task: unannotated
        if spec.kind == "multilabel":
            col = records[spec.column].astype(object)
            records[spec.column] = col.where(~pd.isna(col).to_numpy(dtype=bool), None)
    for column, default in (("fold", -1), ("split", ""), ("source", ""), ("image_type", "")):
        records[column] = records[column].fillna(default)
    records["fold"] = records["fold"].astype(np.int64)
    return Manifest(records, tasks, target)


# --------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ManifestIssue:
    """One problem: the record it concerns (``None`` = the whole manifest), the column, a message."""

    record_id: str | None
    column: str
    message: str
    row: int | None = None

    def __str__(self) -> str:
        where = "manifest" if self.record_id is None else f"record {self.record_id!r}"
        return f"{where}, column {self.column!r}: {self.message}"


@dataclass
class ValidationReport:
    """All problems found by :func:`validate_manifest` (errors make a record unusable)."""

    n_records: int
    errors: list[ManifestIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there are no errors."""
        return not self.errors

    @property
    def manifest_errors(self) -> list[ManifestIssue]:
        """Errors that concern the whole manifest (not one record)."""
        return [e for e in self.errors if e.row is None]

    @property
    def bad_rows(self) -> np.ndarray:
        """Sorted unique row positions with at least one error."""
        rows = [e.row for e in self.errors if e.row is not None]
        return np.unique(np.asarray(rows, dtype=np.int64))

    def reasons_by_row(self) -> dict[int, list[str]]:
        """Row position → error messages (column: message)."""
        out: dict[int, list[str]] = {}
        for e in self.errors:
            if e.row is not None:
                out.setdefault(e.row, []).append(f"{e.column}: {e.message}")
        return out

    def format(self, limit: int = 20) -> str:
        """Human-readable list of the first ``limit`` errors."""
        lines = [f"{len(self.errors)} error(s) in {self.n_records} records:"]
        lines += [f"  - {e}" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"  … and {len(self.errors) - limit} more")
        return "\n".join(lines)

    def raise_if_errors(self, limit: int = 20) -> None:
        """Raise :class:`ManifestError` listing the errors, if there are any."""
        if self.errors:
            raise ManifestError(self.format(limit))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "n_records": self.n_records,
            "n_errors": len(self.errors),
            "n_bad_records": len(self.bad_rows),
            "errors": [
                {"record_id": e.record_id, "column": e.column, "message": e.message, "row": e.row}
                for e in self.errors
            ],
        }


class _Collector:
    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self.issues: list[ManifestIssue] = []

    def rows(self, rows: np.ndarray, column: str, message: str | Sequence[str]) -> None:
        """Add one issue per row in ``rows`` (message per row or shared)."""
        for i, row in enumerate(np.asarray(rows, dtype=np.int64).tolist()):
            msg = message if isinstance(message, str) else message[i]
            rid = self.ids[row]
            self.issues.append(ManifestIssue(None if rid is None else str(rid), column, msg, row))

    def manifest(self, column: str, message: str) -> None:
        self.issues.append(ManifestIssue(None, column, message, None))


_WINDOWS_ABS = re.compile(r"^[A-Za-z]:[\\/]")
_DOTDOT = re.compile(r"(?:^|/)\.\.(?:/|$)")


def _escaping_paths(paths: pd.Series) -> np.ndarray:
    """Bool (N,): the path is absolute or normalises to outside its root (vectorised)."""
    posix = paths.str.replace("\\", "/", regex=False)
    absolute = posix.str.startswith("/").to_numpy(dtype=bool) | paths.str.match(_WINDOWS_ABS).to_numpy(dtype=bool)
    has_dotdot = posix.str.contains(_DOTDOT).to_numpy(dtype=bool)
    escape = absolute.copy()
    for row in np.flatnonzero(has_dotdot & ~absolute):
        norm = posixpath.normpath(posix.iloc[row])
        escape[row] = norm == ".." or norm.startswith("../")
    return escape


def _try_arrow(values: np.ndarray) -> pa.Array | None:
    """Arrow array with an inferred type, or None when the cells do not share one type."""
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None


def _to_float(series: pd.Series) -> np.ndarray:
    """Numbers as float64 (NaN where a cell is null or not a number); never raises."""
    try:
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):  # cells such as lists
        out = np.full(len(series), np.nan)
        for i, v in enumerate(series.to_numpy(dtype=object)):
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)):
                out[i] = float(v)
        return out


def _masked(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Copy of an object array with the cells where ``keep`` is False set to None."""
    out = values.copy()
    out[~keep] = None
    return out


def _check_string_column(df: pd.DataFrame, name: str, out: _Collector, *, allow_empty: bool) -> pd.Series:
    values = df[name].to_numpy(dtype=object)
    n = len(values)
    arr = _try_arrow(values)
    if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type)):
        is_null = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        is_str = ~is_null  # fast path: every cell is a string or null
    else:  # slow path: describe the offending cells
        is_str = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=n)
        is_null = pd.isna(df[name]).to_numpy(dtype=bool)
        arr = pa.array(np.where(is_str, values, None), type=pa.string(), from_pandas=True)
    out.rows(np.flatnonzero(is_null), name, "is missing")
    rows = np.flatnonzero(~is_str & ~is_null)
    out.rows(rows, name, [f"must be a string, got {_show(values[r])}" for r in rows])
    filled = pc.fill_null(arr.cast(pa.string()), "")
    if not allow_empty:
        blank = np.asarray(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(filled)), 0).to_numpy(zero_copy_only=False), dtype=bool)
        out.rows(np.flatnonzero(is_str & blank), name, "is empty")
    return pd.Series(filled.to_numpy(zero_copy_only=False), dtype="str")


def _check_list_column(
    df: pd.DataFrame, name: str, out: _Collector, kind: Literal["string", "number", "bool", "nested"]
) -> tuple[pa.Array | None, np.ndarray]:
    """Arrow array of a list column (None when hopeless) and bool (N,) rows that are usable.

    Null cells are reported by the caller (their meaning depends on the column).
    """
    values = df[name].to_numpy(dtype=object)
    n = len(values)
    arr = _try_arrow(values)
    if arr is not None and _element_type_ok(arr.type, kind):  # fast path: one conversion, no per-row Python
        return _concrete_list(arr, kind), ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    is_null = pd.isna(df[name]).to_numpy(dtype=bool) if n else np.zeros(0, dtype=bool)
    is_list = np.fromiter((_is_list_cell(v) for v in values), dtype=bool, count=n)
    not_list = ~is_list & ~is_null
    out.rows(np.flatnonzero(not_list), name, "must be a list")
    usable = is_list.copy()
    arr = _try_arrow(_masked(values, usable))
    if arr is not None and _element_type_ok(arr.type, kind):
        return _concrete_list(arr, kind), usable
    for row in np.flatnonzero(usable):  # find the offending cells one by one
        cell = _try_arrow(np.array([values[row], None], dtype=object)[:1])
        if cell is None or not _element_type_ok(cell.type, kind):
            out.rows(np.array([row]), name, f"must be a list of {kind} values, got {_show(values[row])}")
            usable[row] = False
    arr = _try_arrow(_masked(values, usable))
    if arr is None or not _element_type_ok(arr.type, kind):  # mixed element types across rows
        return None, np.zeros(n, dtype=bool)
    return _concrete_list(arr, kind), usable


_DEFAULT_LIST_TYPES: dict[str, pa.DataType] = {
    "string": pa.list_(pa.string()),
    "number": pa.list_(pa.float64()),
    "bool": pa.list_(pa.bool_()),
    "nested": pa.list_(pa.list_(pa.float64())),
}


def _concrete_list(arr: pa.Array, kind: str) -> pa.Array:
    """Give all-null / all-empty list arrays (null element type) a concrete list type."""
    t = arr.type
    if pa.types.is_null(t) or (pa.types.is_list(t) and pa.types.is_null(t.value_type)):
        return arr.cast(_DEFAULT_LIST_TYPES[kind]) if not pa.types.is_null(t) else pa.nulls(len(arr), _DEFAULT_LIST_TYPES[kind])
    if kind == "nested" and pa.types.is_list(t) and pa.types.is_list(t.value_type) and pa.types.is_null(t.value_type.value_type):
        return arr.cast(_DEFAULT_LIST_TYPES[kind])
    return arr


def _element_type_ok(t: pa.DataType, kind: str) -> bool:
    if pa.types.is_null(t):
        return True
    if not pa.types.is_list(t) and not pa.types.is_large_list(t):
        return False
    v = t.value_type
    if pa.types.is_null(v):
        return True
    if kind == "string":
        return bool(pa.types.is_string(v) or pa.types.is_large_string(v))
    if kind == "number":
        return bool(pa.types.is_integer(v) or pa.types.is_floating(v) or pa.types.is_boolean(v))
    if kind == "bool":
        return bool(pa.types.is_boolean(v) or pa.types.is_integer(v))
    # nested: list of lists of numbers
    return _element_type_ok(v, "number")


def _lengths(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.list_value_length(arr), -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def validate_manifest(
    manifest: Manifest,
    *,
    require_texts: bool = False,
    require_labels: Sequence[str] = (),
) -> ValidationReport:
    """Check the schema of every record; errors name the record id and the column.

    Checks: required columns; ids present, strings and unique; image paths non-empty and
    not escaping the root (absolute or ``..`` out of it); known ``image_type``; ``texts`` a list
    of non-empty strings (and non-empty when ``require_texts``); every ``labels.<task>`` of
    a declared task with the right type, length and range (multilabel values in [0, 1],
    class indices in [0, C) or -1, finite regression targets or NaN); ``label_mask`` and
    ``text_labels`` lengths; ``group`` a non-empty string; ``split`` in ``SPLITS``; ``fold``
    an integer ≥ -1; label columns without a task spec. ``require_labels`` names tasks every
    record must be annotated for. File existence is checked by
    :func:`medvl.data.dataset.preflight`, not here.
    """
    df = manifest.records
    n = len(df)
    raw_ids = df["id"].to_numpy(dtype=object)
    out = _Collector(raw_ids)
    report = ValidationReport(n_records=n)

    # ids
    ids = _check_string_column(df, "id", out, allow_empty=False)
    valid_id = (ids != "").to_numpy(dtype=bool)
    dup = ids.duplicated(keep=False).to_numpy(dtype=bool) & valid_id
    if dup.any():
        counts = ids[dup].value_counts()
        rows = np.flatnonzero(dup)
        out.rows(rows, "id", [f"duplicate id ({counts[ids.iloc[r]]} records share it)" for r in rows])

    # image path
    images = _check_string_column(df, "image", out, allow_empty=False)
    escape = _escaping_paths(images)
    out.rows(np.flatnonzero(escape), "image", "path escapes the manifest root (absolute or '..' out of it)")

    # image_type
    if "image_type" in df.columns:
        types = df["image_type"].fillna("").astype(str)
        bad_type = ~types.isin(IMAGE_TYPES).to_numpy(dtype=bool)
        rows = np.flatnonzero(bad_type)
        out.rows(rows, "image_type", [f"unknown image_type {types.iloc[r]!r}; expected one of {IMAGE_TYPES}" for r in rows])
        effective = manifest.image_types()
        unknown = (effective == "") & ~bad_type & (images != "").to_numpy(dtype=bool) & ~escape
        out.rows(np.flatnonzero(unknown), "image_type", "cannot infer the image type from the extension; set image_type")

    # texts
    texts, usable = _check_list_column(df, "texts", out, "string")
    null_texts = pd.isna(df["texts"]).to_numpy(dtype=bool)
    if require_texts:
        out.rows(np.flatnonzero(null_texts), "texts", "no texts (texts are required)")
    if texts is not None:
        lengths = _lengths(texts)
        if require_texts:
            out.rows(np.flatnonzero(usable & (lengths == 0)), "texts", "no texts (texts are required)")
        flat = pc.list_flatten(texts)
        parents = pc.list_parent_indices(texts).to_numpy(zero_copy_only=False)
        if len(flat):
            blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(flat)), 0), True)
            blank_np = np.asarray(blank.to_numpy(zero_copy_only=False), dtype=bool)
            rows = np.unique(parents[blank_np])
            out.rows(rows, "texts", "contains an empty text")
        text_counts = np.where(usable, lengths, -1)
    else:
        text_counts = np.full(n, -1, dtype=np.int64)

    # labels
    for spec in manifest.tasks.values():
        _validate_task(df, spec, out, text_counts, required=spec.name in require_labels)
    for col in df.columns:
        for prefix in (LABEL_PREFIX, MASK_PREFIX, TEXT_LABEL_PREFIX):
            if col.startswith(prefix) and col[len(prefix) :] not in manifest.tasks:
                out.manifest(col, f"column has no task spec (declared tasks: {sorted(manifest.tasks)})")
    for name in require_labels:
        if name not in manifest.tasks:
            out.manifest(LABEL_PREFIX + name, f"required task {name!r} is not declared")

    # group / split / fold / source
    _check_string_column(df, "group", out, allow_empty=False)
    splits = df["split"].to_numpy(dtype=object)
    split_str = pd.Series(np.where(pd.isna(df["split"]).to_numpy(dtype=bool), "", splits), dtype=object)
    bad_split = ~split_str.isin(SPLITS).to_numpy(dtype=bool)
    rows = np.flatnonzero(bad_split)
    out.rows(rows, "split", [f"unknown split {split_str.iloc[r]!r}; expected one of {SPLITS}" for r in rows])
    folds = pd.to_numeric(df["fold"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_fold = ~np.isfinite(folds) | (folds != np.round(np.nan_to_num(folds))) | (folds < -1)
    rows = np.flatnonzero(bad_fold)
    out.rows(rows, "fold", [f"must be an integer >= -1, got {_show(df['fold'].iloc[r])}" for r in rows])
    source_vals = df["source"].to_numpy(dtype=object)
    source_arr = _try_arrow(source_vals)
    if source_arr is None or not (pa.types.is_string(source_arr.type) or pa.types.is_null(source_arr.type)):
        bad_source = np.fromiter((not isinstance(v, str) for v in source_vals), dtype=bool, count=n)
        rows = np.flatnonzero(bad_source & ~pd.isna(df["source"]).to_numpy(dtype=bool))
        out.rows(rows, "source", [f"must be a string, got {_show(source_vals[r])}" for r in rows])

    report.errors = sorted(out.issues, key=lambda e: (-1 if e.row is None else e.row))
    return report


def _validate_task(df: pd.DataFrame, spec: TaskSpec, out: _Collector, text_counts: np.ndarray, required: bool) -> None:
    col = spec.column
    if col not in df.columns:
        out.manifest(col, f"label column for task {spec.name!r} is missing")
        return
    n = len(df)
    c = spec.num_classes
    if spec.kind == "multilabel":
        arr, usable = _check_list_column(df, col, out, "number")
        if required:
            out.rows(np.flatnonzero(pd.isna(df[col]).to_numpy(dtype=bool)), col, "record has no labels for a required task")
        if arr is not None:
            lengths = _lengths(arr)
            wrong = usable & (lengths != c)
            rows = np.flatnonzero(wrong)
            out.rows(rows, col, [f"has {lengths[r]} values, expected {c} (classes of task {spec.name!r})" for r in rows])
            flat = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=np.float64)
            parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
            bad = ~((flat >= 0) & (flat <= 1)) & ~np.isnan(flat)
            rows = np.unique(parents[bad])
            rows = rows[~wrong[rows]]
            out.rows(rows, col, "label values must be in [0, 1]")
        mask_col = MASK_PREFIX + spec.name
        if mask_col in df.columns:
            marr, musable = _check_list_column(df, mask_col, out, "bool")
            if marr is not None:
                mlen = _lengths(marr)
                rows = np.flatnonzero(musable & (mlen != c))
                out.rows(rows, mask_col, [f"has {mlen[r]} values, expected {c}" for r in rows])
        if arr is not None and (mask_col not in df.columns):
            flat_nan = np.isnan(np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False), dtype=np.float64))
            if flat_nan.any():
                parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
                out.rows(np.unique(parents[flat_nan]), col, "NaN label without a label_mask column (mask it out)")
    else:
        raw = df[col]
        numeric = _to_float(raw)
        is_null = pd.isna(raw).to_numpy(dtype=bool)
        not_number = np.isnan(numeric) & ~is_null
        if raw.dtype == object:
            bools = np.fromiter((isinstance(v, (bool, np.bool_)) for v in raw.to_numpy(dtype=object)), dtype=bool, count=n)
            not_number |= bools
        rows = np.flatnonzero(not_number)
        out.rows(rows, col, [f"must be a number, got {_show(raw.iloc[r])}" for r in rows])
        if spec.kind == "regression":
            inf = np.isinf(numeric)
            out.rows(np.flatnonzero(inf), col, "regression target must be finite (NaN = unannotated)")
            missing = np.isnan(numeric) & ~not_number
        else:
            finite = np.isfinite(numeric)
            non_int = finite & (numeric != np.round(np.nan_to_num(numeric)))
            out.rows(np.flatnonzero(non_int), col, "class index must be an integer")
            out_of_range = finite & ~non_int & ((numeric >= c) | (numeric < -1))
            rows = np.flatnonzero(out_of_range)
            out.rows(
                rows,
                col,
                [f"class index {int(numeric[r])} out of range [0, {c}) for task {spec.name!r} (-1 = unannotated)" for r in rows],
            )
            missing = (np.isnan(numeric) & ~not_number) | (numeric == -1)
        if required:
            out.rows(np.flatnonzero(missing), col, "record has no label for a required task")
        mask_col = MASK_PREFIX + spec.name
        if mask_col in df.columns:
            mask_arr = _try_arrow(df[mask_col].to_numpy(dtype=object))
            if mask_arr is None or not (pa.types.is_boolean(mask_arr.type) or pa.types.is_null(mask_arr.type)):
                values = df[mask_col].to_numpy(dtype=object)
                bad = np.fromiter(
                    (not (v is None or isinstance(v, (bool, np.bool_))) for v in values), dtype=bool, count=n
                )
                rows = np.flatnonzero(bad)
                out.rows(rows, mask_col, [f"must be true/false for a {spec.kind} task, got {_show(values[r])}" for r in rows])
    tl_col = TEXT_LABEL_PREFIX + spec.name
    if tl_col in df.columns:
        kind: Literal["number", "nested"] = "nested" if spec.kind == "multilabel" else "number"
        tarr, tusable = _check_list_column(df, tl_col, out, kind)
        if tarr is not None:
            tlen = _lengths(tarr)
            mismatch = tusable & (text_counts >= 0) & (tlen != text_counts)
            rows = np.flatnonzero(mismatch)
            out.rows(rows, tl_col, [f"has {tlen[r]} entries but the record has {text_counts[r]} texts" for r in rows])
            if spec.kind == "multilabel":
                inner = pc.list_flatten(tarr)
                ilen = _lengths(inner)
                parents = pc.list_parent_indices(tarr).to_numpy(zero_copy_only=False)
                rows = np.unique(parents[ilen != c])
                out.rows(rows, tl_col, f"per-text label vectors must have {c} values")
