"""The manifest: one table of records (id, image, texts, labels per task, group, split, fold).

The package is split by concern; every public name is re-exported here, so callers import
from ``medvl.data.manifest``:

* :mod:`.columns` — column names, allowed values, cell helpers and their Arrow forms;
* :mod:`.schema` — :class:`TaskSpec`, :class:`Manifest`, :func:`concat_manifests`;
* :mod:`.formats` — Parquet / CSV / JSONL reading and writing, the task-spec sidecar;
* :mod:`.validation` — :func:`validate_manifest` and its report.

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

from medvl.data.manifest.columns import (
    FORMAT_VERSION,
    IMAGE_TYPES,
    LABEL_PREFIX,
    MASK_PREFIX,
    SPLITS,
    TASK_KINDS,
    TEXT_LABEL_PREFIX,
    ManifestError,
    TaskKind,
    as_list,
    infer_image_type,
    list_column_to_matrix,
)
from medvl.data.manifest.formats import infer_tasks, read_manifest, sidecar_path, write_manifest
from medvl.data.manifest.schema import Manifest, TaskSpec, concat_manifests
from medvl.data.manifest.validation import ManifestIssue, ValidationReport, validate_manifest

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_TYPES",
    "LABEL_PREFIX",
    "MASK_PREFIX",
    "SPLITS",
    "TASK_KINDS",
    "TEXT_LABEL_PREFIX",
    "Manifest",
    "ManifestError",
    "ManifestIssue",
    "TaskKind",
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
