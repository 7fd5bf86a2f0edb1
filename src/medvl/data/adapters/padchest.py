"""PadChest: the label-list CSV, partial-label masks, patient-grouped split.

The ``Labels`` column holds a Python-literal list per image, e.g.
``"['pleural effusion', ' cardiomegaly']"`` (entries may carry a leading space; some are
``''``). It is parsed with :func:`ast.literal_eval`, so every entry is its own label (no
implicit string concatenation: the reference code lost 'volume loss' and 'vascular hilar
enlargement' to a missing comma). Images whose list is empty, missing or only ``exclude`` /
``suboptimal study`` have no labels: their ``label_mask.padchest`` is all false (or they are
dropped with ``drop_unlabelled=true``).

The class list is every label that occurs (sorted), or ``classes`` given by the user (e.g. a
label space shared with other datasets); labels outside a user list are counted in the import
info, never dropped silently. A user class that never occurs in PadChest is not annotated by
this dataset: its mask entry is false for every record (partial labels across datasets), unless
``unobserved_negative=true`` declares it a known negative. PadChest has no
official split: patients are split by a seeded hash of ``PatientID``.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    find_first,
    finish_import,
    hash_split,
    normalise_ids,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["CSV_NAMES", "LAYOUT", "NO_LABEL", "SPEC", "Options", "load", "parse_label_list"]

CSV_NAMES = ("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
             "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")
LAYOUT = """\
<root>/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]
    (ImageID, ImageDir, PatientID, Projection, MethodLabel, Labels, Report, ...)
<root>/<ImageDir>/<ImageID>       (folders 0..54 as unzipped; image_layout=flat: <root>/images/<ImageID>)"""

#: Entries that mean "no usable labels for this image".
NO_LABEL = frozenset({"exclude", "suboptimal study"})
FRONTAL_PROJECTIONS = ("PA", "AP", "AP_horizontal")


class Options(CommonOptions):
    """PadChest import options."""

    classes: list[str] | None = None
    frontal_only: bool = False
    image_layout: Literal["by_dir", "flat"] = "by_dir"
    flat_dir: str = "images"
    drop_unlabelled: bool = False
    normal_as_no_finding: bool = False
    """Rename 'normal' to 'no finding' (DLILP's convention)."""
    use_reports: bool = False
    """Put the (pre-processed Spanish) ``Report`` text in ``texts``."""
    unobserved_negative: bool = False
    """Treat user ``classes`` that never occur in the CSV as annotated negatives (default: masked out)."""
    labelled_by: list[str] = Field(default_factory=lambda: ["Physician", "RNN_model"])
    """Keep labels from these ``MethodLabel`` values (others: mask all false)."""


def parse_label_list(cell: Any, where: str) -> list[str] | None:
    """Parse one ``Labels`` cell: sorted unique stripped lower-case labels, or None (no labels)."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None
    text = str(cell).strip()
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise DatasetFormatError(f"{where}: Labels {text[:80]!r} is not a Python list literal ({exc})") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DatasetFormatError(f"{where}: Labels {text[:80]!r} is not a list of strings")
    labels = sorted({v.strip() for v in value if v.strip()})
    if not labels or set(labels) <= NO_LABEL:
        return None
    return [v for v in labels if v not in NO_LABEL]


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the PadChest label CSV under ``root``."""
    require_paths(root, "PadChest", LAYOUT, any_of=[list(CSV_NAMES)])
    csv_path = find_first(root, CSV_NAMES)
    assert csv_path is not None
    table = read_table(csv_path, id_columns=["ImageID", "ImageDir", "PatientID"], low_memory=False)
    require_columns(table, ["ImageID", "ImageDir", "PatientID", "Projection", "Labels"], csv_path.name)
    skips = SkipCounter(options.on_bad_sample)
    if options.frontal_only:
        keep = table["Projection"].astype(str).isin(FRONTAL_PROJECTIONS)
        skips.filter(f"projection not in {FRONTAL_PROJECTIONS} (frontal_only)", int((~keep).sum()))
        table = table.loc[keep].reset_index(drop=True)
    parsed: list[list[str] | None] = []
    for position, (image_id, cell) in enumerate(zip(table["ImageID"], table["Labels"], strict=True)):
        try:
            labels = parse_label_list(cell, f"{csv_path.name} row {position} ({image_id})")
        except DatasetFormatError as exc:
            skips.bad("unparseable Labels", str(image_id), str(exc))
            labels = None
        if labels is not None and options.normal_as_no_finding:
            labels = sorted({"no finding" if v == "normal" else v for v in labels})
        parsed.append(labels)
    if "MethodLabel" in table.columns:
        method_ok = table["MethodLabel"].astype(str).isin(options.labelled_by).to_numpy()
        parsed = [p if ok else None for p, ok in zip(parsed, method_ok, strict=True)]
    observed = Counter(label for labels in parsed if labels for label in labels)
    classes = list(options.classes) if options.classes is not None else sorted(observed)
    if not classes:
        raise DatasetFormatError(f"{csv_path.name}: no labels found")
    column = {c: i for i, c in enumerate(classes)}
    outside = {label: n for label, n in observed.items() if label not in column}
    annotated = [options.unobserved_negative or c in observed for c in classes]
    values, masks = [], []
    for labels in parsed:
        vector = [0.0] * len(classes)
        for label in labels or ():
            if label in column:
                vector[column[label]] = 1.0
        values.append(vector)
        masks.append([labels is not None and a for a in annotated])
    groups = normalise_ids(table["PatientID"], f"{csv_path.name} PatientID")
    if options.image_layout == "by_dir":
        dirs = normalise_ids(table["ImageDir"], f"{csv_path.name} ImageDir")
        images = [f"{d}/{i}" for d, i in zip(dirs, table["ImageID"].astype(str).str.strip(), strict=True)]
    else:
        images = [f"{options.flat_dir}/{i}" for i in table["ImageID"].astype(str).str.strip()]
    frame = pd.DataFrame({
        "id": table["ImageID"].astype(str).str.strip().str.replace(r"\.png$", "", regex=True),
        "image": images, "group": groups, "projection": table["Projection"].astype(str),
        "labels.padchest": values, "label_mask.padchest": masks,
    })
    if options.use_reports and "Report" in table.columns:
        frame["texts"] = [[str(r).strip()] if isinstance(r, str) and r.strip() else [] for r in table["Report"]]
    unlabelled = np.array([p is None for p in parsed])
    if options.drop_unlabelled:
        skips.filter("no usable labels (drop_unlabelled)", int(unlabelled.sum()))
        frame = frame.loc[~unlabelled].reset_index(drop=True)
    frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                {"val": options.val_fraction, "test": options.test_fraction})
    tasks = {"padchest": TaskSpec("padchest", "multilabel", tuple(classes))}
    if options.caption_template:
        template = load_template(options.caption_template)
        frame["texts"] = template_texts(frame["labels.padchest"].tolist(), classes, template,
                                        frame["label_mask.padchest"].tolist())
    notes = [f"{int(unlabelled.sum())} images without usable labels (mask all false)"]
    if outside:
        notes.append(f"labels outside the class list (not encoded): {dict(sorted(outside.items()))}")
    never = [c for c, a in zip(classes, annotated, strict=True) if not a]
    if never:
        notes.append(f"classes never annotated by PadChest (mask false): {never}")
    return finish_import(frame, tasks, root, "padchest", options, skips, notes,
                         label_counts=dict(sorted(observed.items())))


SPEC = AdapterSpec(
    name="padchest",
    summary="PadChest label lists (parsed literally), partial-label masks, patient-hash split",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import padchest --root /data/padchest --out padchest.parquet --set frontal_only=true",
)
