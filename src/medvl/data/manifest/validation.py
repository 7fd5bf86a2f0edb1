"""Manifest checks: every record's schema, with errors that name the record id and the column.

Checks are columnar (Arrow compute kernels over whole columns); per-record Python runs only to
describe records that already failed a vectorised check, so millions of rows validate in seconds.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medvl.data.manifest.columns import (
    IMAGE_TYPES,
    LABEL_PREFIX,
    MASK_PREFIX,
    SPLITS,
    TEXT_LABEL_PREFIX,
    ManifestError,
    _is_list_cell,
    _show,
)
from medvl.data.manifest.schema import Manifest, TaskSpec

__all__ = ["ManifestIssue", "ValidationReport", "validate_manifest"]


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
