"""NIH ChestX-ray14: ``Data_Entry_2017*.csv`` labels and the official train_val/test lists.

``Finding Labels`` is a ``|``-separated list of the 14 findings or ``No Finding`` (all zeros).
The official lists decide ``test`` and ``train``; ``val`` is a patient-hash ``val_fraction`` of
the train_val patients (the official lists are patient-disjoint, and so is the carve-out).
Images may sit in ``images/`` or in the ``images_001/images/`` … folders of the release; they
are indexed by file name (sorted walk, so the result does not depend on listing order).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    carve_val_split,
    find_first,
    finish_import,
    normalise_ids,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "SPEC", "Options", "image_index", "load"]

#: The 14 findings, in the order of the ChestX-ray14 paper / benchmark tables.
CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
LAYOUT = """\
<root>/Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv)   (Image Index, Finding Labels, Patient ID, View Position, ...)
<root>/train_val_list.txt  <root>/test_list.txt              (one image file name per line)
<root>/images/*.png  or  <root>/images_001/images/*.png …"""
_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv.gz")


class Options(CommonOptions):
    """NIH ChestX-ray14 import options."""

    frontal_only: bool = True
    """ChestX-ray14 is all frontal (PA/AP); kept for symmetry, filters on View Position."""


def image_index(root: Path) -> dict[str, str]:
    """Image file name → path relative to ``root``, over the ``images*`` folders (sorted walk: first wins)."""
    index: dict[str, str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("images")):
        for path in sorted(folder.rglob("*.png")):
            index.setdefault(path.name, path.relative_to(root).as_posix())
    return index


def _read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def load(root: Path, options: Options) -> ImportedDataset:
    """Read ChestX-ray14 labels, lists and image locations under ``root``."""
    require_paths(root, "NIH ChestX-ray14", LAYOUT, ["train_val_list.txt", "test_list.txt"], any_of=[list(_ENTRY_FILES)])
    entry = find_first(root, _ENTRY_FILES)
    assert entry is not None
    table = read_table(entry, id_columns=["Patient ID"])
    require_columns(table, ["Image Index", "Finding Labels", "Patient ID"], entry.name)
    skips = SkipCounter(options.on_bad_sample)
    if options.frontal_only and "View Position" in table.columns:
        keep = table["View Position"].astype(str).str.strip().isin(["PA", "AP"])
        skips.filter("view not PA/AP", int((~keep).sum()))
        table = table.loc[keep].reset_index(drop=True)
    test, train_val = _read_list(root / "test_list.txt"), _read_list(root / "train_val_list.txt")
    both = test & train_val
    if both:
        raise DatasetFormatError(f"images in both official lists: {sorted(both)[:5]}")
    index = image_index(root)
    column = {c: i for i, c in enumerate(CLASSES)}
    rows = []
    for name, findings, group in zip(table["Image Index"].astype(str).str.strip(), table["Finding Labels"],
                                     normalise_ids(table["Patient ID"], f"{entry.name} Patient ID"), strict=True):
        labels = [f.strip() for f in str(findings).split("|") if f.strip()]
        unknown = [f for f in labels if f not in column and f != "No Finding"]
        if unknown:
            skips.bad("unknown finding", name, f"{unknown}")
            continue
        if name not in index and options.check_files:
            skips.bad("missing file", name, "not found under images*/")
            continue
        vector = [0.0] * len(CLASSES)
        for f in labels:
            if f in column:
                vector[column[f]] = 1.0
        split = "test" if name in test else "train" if name in train_val else ""
        rows.append({"id": name.removesuffix(".png"), "image": index.get(name, f"images/{name}"), "group": group,
                     "split": split, "labels.nih": vector})
    frame = pd.DataFrame(rows, columns=["id", "image", "group", "split", "labels.nih"])
    unlisted = int((frame["split"] == "").sum())
    frame = carve_val_split(frame, options)
    tasks = {"nih": TaskSpec("nih", "multilabel", CLASSES)}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.nih"].tolist(), CLASSES, load_template(options.caption_template))
    notes = [f"{unlisted} images in neither official list (split '')"] if unlisted else []
    return finish_import(frame, tasks, root, "nih_cxr14", options, skips, notes, check_files=False)


SPEC = AdapterSpec(
    name="nih_cxr14",
    summary="NIH ChestX-ray14 (14 findings, official train_val/test lists, patient-level val)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import nih_cxr14 --root /data/ChestX-ray14 --out nih.parquet",
)
