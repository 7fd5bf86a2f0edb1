"""Label harmonisation across chest X-ray datasets: each dataset's classes → one shared label space.

A harmonisation table (``resources/harmonisation/<name>.yaml``, or any YAML path) lists the
shared classes and, per dataset, which of its own classes map to which shared classes
(see ``cxr.yaml``: CheXpert/MIMIC, NIH ChestX-ray14, PadChest, VinDr-CXR, RSNA, SIIM).
:func:`harmonise` adds a multilabel task over the shared classes to a manifest:

* a shared class that none of the dataset's classes maps to is **unannotated** for its records
  (``label_mask`` false) — the dataset does not say, which is not the same as negative
  (torchxrayvision's ``relabel_dataset`` fills such classes with NaN for the same reason);
* several source classes mapping to one shared class are OR-ed: positive if any annotated
  source class is positive, negative only if every mapped source class is annotated negative,
  unannotated otherwise;
* multiclass sources (RSNA, SIIM) give per source class the shared classes positive for it;
  ``annotates`` lists the shared classes such a dataset speaks about (negative otherwise);
* source classes the table does not list are left out and counted in the result's ``info``.

Combined with masked BCE, the harmonised manifests of several datasets train one model on the
union of their label spaces (DLILP's MIMIC + CheXpert + PadChest).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medvl.data.manifest import Manifest, ManifestError, TaskSpec
from medvl.utils.resources import read_yaml_source

__all__ = ["HarmonisationError", "HarmonisationTable", "harmonise", "load_harmonisation"]


class HarmonisationError(ManifestError):
    """A harmonisation table is malformed or does not fit the manifest; the message names the entry."""


@dataclass(frozen=True)
class DatasetMap:
    """How one dataset's task maps to the shared classes."""

    task: str
    mapping: dict[str, tuple[str, ...]]
    annotates: tuple[str, ...] | None = None


@dataclass(frozen=True)
class HarmonisationTable:
    """Shared classes and per-dataset maps (read with :func:`load_harmonisation`)."""

    name: str
    classes: tuple[str, ...]
    datasets: dict[str, DatasetMap] = field(default_factory=dict)
    source: str = "<memory>"


def _targets(value: Any, where: str, classes: tuple[str, ...]) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value or [])
    unknown = [v for v in items if v not in classes]
    if unknown:
        raise HarmonisationError(f"{where}: maps to unknown shared class(es) {unknown}")
    return tuple(items)


def load_harmonisation(source: str | os.PathLike[str] = "cxr") -> HarmonisationTable:
    """Read a harmonisation table: a built-in name (``cxr``) or a YAML path."""
    text, where = read_yaml_source(source, "harmonisation", what="harmonisation table", error=HarmonisationError)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not isinstance(data.get("datasets"), dict):
        raise HarmonisationError(f"{where}: needs 'classes' (a list) and 'datasets' (a mapping)")
    classes = tuple(str(c) for c in data["classes"])
    if len(set(classes)) != len(classes):
        raise HarmonisationError(f"{where}: repeated shared classes")
    raw = data["datasets"]
    datasets: dict[str, DatasetMap] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict) or "task" not in entry:
            raise HarmonisationError(f"{where}: dataset {name!r} needs 'task' and 'map' (or 'same_as')")
        if "same_as" in entry:
            base = raw.get(entry["same_as"])
            if not isinstance(base, dict) or "map" not in base:
                raise HarmonisationError(f"{where}: dataset {name!r}: same_as {entry['same_as']!r} has no map")
            entry = {**base, "task": entry["task"]}
        mapping = {str(k): _targets(v, f"{where}: {name}.{k}", classes) for k, v in (entry.get("map") or {}).items()}
        annotates = entry.get("annotates")
        datasets[str(name)] = DatasetMap(str(entry["task"]), mapping,
                                         None if annotates is None else _targets(annotates, f"{where}: {name}.annotates", classes))
    return HarmonisationTable(str(data.get("name") or Path(source).stem), classes, datasets, where)


def harmonise(manifest: Manifest, dataset: str, table: HarmonisationTable | str = "cxr", *,
              new_task: str | None = None) -> tuple[Manifest, dict[str, Any]]:
    """Add the shared multilabel task ``new_task`` (default: the table's name) to ``manifest``.

    ``dataset`` names the table's entry (``chexpert``, ``mimic``, ``nih``, …). Returns the new
    manifest and an info dict (source classes left out, shared classes annotated, positives per
    shared class).
    """
    tab = load_harmonisation(table) if isinstance(table, str) else table
    if dataset not in tab.datasets:
        raise HarmonisationError(f"{tab.source}: no dataset {dataset!r}; datasets: {sorted(tab.datasets)}")
    entry = tab.datasets[dataset]
    spec = manifest.task(entry.task) if entry.task in manifest.tasks else None
    if spec is None:
        raise HarmonisationError(f"{tab.source}: dataset {dataset!r} reads task {entry.task!r}, "
                                 f"which the manifest lacks (tasks: {sorted(manifest.tasks)})")
    name = new_task or tab.name
    if name in manifest.tasks:
        raise HarmonisationError(f"the manifest already has a task {name!r}; pass another new_task")
    n, k = len(manifest), len(tab.classes)
    column = {c: i for i, c in enumerate(tab.classes)}
    left_out = [c for c in spec.classes if c not in entry.mapping]
    positive = np.zeros((n, k), dtype=bool)
    if spec.kind == "multilabel":
        labels, mask = manifest.label_matrix(spec.name), manifest.label_mask(spec.name)
        known_negative = np.ones((n, k), dtype=bool)
        mapped = np.zeros(k, dtype=bool)
        for source_index, cls in enumerate(spec.classes):
            for target in entry.mapping.get(cls, ()):
                j = column[target]
                mapped[j] = True
                pos = (labels[:, source_index] == 1) & mask[:, source_index]
                positive[:, j] |= pos
                known_negative[:, j] &= mask[:, source_index] & ~pos
        annotated = positive | (known_negative & mapped[None, :])
    elif spec.kind in ("multiclass", "ordinal"):
        y = manifest.label_matrix(spec.name)
        speaks = set(entry.annotates or ()) | {t for c in spec.classes for t in entry.mapping.get(c, ())}
        annotated = np.zeros((n, k), dtype=bool)
        for source_index, cls in enumerate(spec.classes):
            rows = y == source_index
            if cls not in entry.mapping:
                continue  # a source class the table leaves out: its records say nothing
            for target in entry.mapping[cls]:
                positive[rows, column[target]] = True
            annotated[np.ix_(rows, [column[t] for t in sorted(speaks)])] = True
    else:
        raise HarmonisationError(f"task {spec.name!r} is {spec.kind}: only class tasks can be harmonised")
    records = manifest.records.copy()
    records[f"labels.{name}"] = [row.astype(np.float32).tolist() for row in positive]
    records[f"label_mask.{name}"] = [row.tolist() for row in annotated]
    tasks = dict(manifest.tasks)
    tasks[name] = TaskSpec(name, "multilabel", tab.classes)
    info = {
        "table": tab.source, "dataset": dataset, "source_task": spec.name, "task": name,
        "left_out_source_classes": left_out,
        "annotated_classes": [c for c in tab.classes if annotated[:, column[c]].any()],
        "positives": {c: int(positive[:, column[c]].sum()) for c in tab.classes},
    }
    return Manifest(records, tasks, manifest.root), info
