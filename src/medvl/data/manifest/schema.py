"""The manifest schema: task specifications and the :class:`Manifest` (records + tasks + root).

A :class:`Manifest` is a :class:`pandas.DataFrame` of records plus task specifications
(:class:`TaskSpec`) plus ``root``, the directory that image paths are relative to. See the
"Manifest" contract in ``docs/DESIGN.md`` for the column table and :mod:`medvl.data.manifest`
for the in-memory representation of cells.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa

from medvl.data.manifest.columns import (
    _CORE_DEFAULTS,
    LABEL_PREFIX,
    MASK_PREFIX,
    SPLITS,
    TASK_KINDS,
    ManifestError,
    TaskKind,
    canonical_types,
    column_order,
    infer_image_type,
    list_column_to_matrix,
)

__all__ = ["Manifest", "TaskSpec", "concat_manifests"]


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


def _to_arrow(manifest: Manifest) -> pa.Table:
    types = canonical_types(manifest.tasks.values())
    df = manifest.records
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name in column_order(df.columns, manifest.tasks.values()):
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
