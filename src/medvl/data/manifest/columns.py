"""Manifest columns: names, allowed values, cell helpers and their Arrow forms.

Constants shared by the schema (:mod:`.schema`), the file formats (:mod:`.formats`) and the
checks (:mod:`.validation`); the conversion of list columns to Arrow arrays and matrices; the
canonical Arrow type and order of every known column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from medvl.utils.errors import UserInputError

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_TYPES",
    "LABEL_PREFIX",
    "MASK_PREFIX",
    "SPLITS",
    "TASK_KINDS",
    "TEXT_LABEL_PREFIX",
    "ManifestError",
    "as_list",
    "canonical_types",
    "column_order",
    "infer_image_type",
    "list_column_to_matrix",
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


class TaskSpecLike(Protocol):
    """What the column helpers need of a :class:`~medvl.data.manifest.schema.TaskSpec`."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def column(self) -> str: ...


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


def canonical_types(tasks: Iterable[TaskSpecLike]) -> dict[str, pa.DataType]:
    """Arrow type of every known column, given the task specs (labels, masks, text labels per kind)."""
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
    for spec in tasks:
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


def column_order(columns: Iterable[str], tasks: Iterable[TaskSpecLike]) -> list[str]:
    """Canonical order: core columns, each task's label/mask/text-label columns, then the rest sorted."""
    cols = list(columns)
    first = ["id", "image", "image_type", "texts"]
    for spec in tasks:
        first += [spec.column, MASK_PREFIX + spec.name, TEXT_LABEL_PREFIX + spec.name]
    first += ["group", "split", "fold", "source"]
    ordered = [c for c in first if c in cols]
    return ordered + sorted(c for c in cols if c not in set(ordered))
