"""Manifest files: Parquet (canonical), CSV and JSONL, and the task-spec sidecar.

Parquet keeps task specs, the format version and the root (relative to the file) in its
key-value metadata under ``medvl``; CSV (list cells as JSON) and JSONL (native JSON arrays)
keep the same information in ``<stem>.tasks.json``. Writes are atomic.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medvl.data.manifest.columns import (
    _METADATA_KEY,
    FORMAT_VERSION,
    LABEL_PREFIX,
    MASK_PREFIX,
    TEXT_LABEL_PREFIX,
    ManifestError,
    _is_list_cell,
    column_order,
)
from medvl.data.manifest.schema import Manifest, TaskSpec, _normalise_tasks
from medvl.utils.io import atomic_open, atomic_write_json, read_json

__all__ = ["infer_tasks", "read_manifest", "sidecar_path", "write_manifest"]


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
        "columns": column_order(manifest.records.columns, manifest.tasks.values()),
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
