"""RSNA Pneumonia Detection Challenge: DICOM images, box labels and the detailed class info.

``stage_2_train_labels.csv`` has one row per box (``patientId, x, y, width, height, Target``),
so a patient with three boxes has three rows; rows are merged per image (boxes kept in the
``boxes`` column as ``[x, y, width, height]`` lists). ``stage_2_detailed_class_info.csv``
(duplicated per box as well) gives the three-way class. Each image is one patient
(``patientId`` is the DICOM PatientID). No official labelled test split: patient-hash split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    finish_import,
    hash_split,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["DETAILED_CLASSES", "LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/stage_2_train_labels.csv            (patientId, x, y, width, height, Target)
<root>/stage_2_detailed_class_info.csv     (patientId, class)   [optional]
<root>/stage_2_train_images/<patientId>.dcm"""
DETAILED_CLASSES: tuple[str, ...] = ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")


class Options(CommonOptions):
    """RSNA Pneumonia import options."""

    exclude_not_normal: bool = False
    """Drop 'No Lung Opacity / Not Normal' images (DLILP's Normal vs Pneumonia task)."""
    image_dir: str = "stage_2_train_images"


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the RSNA Pneumonia labels under ``root``."""
    require_paths(root, "RSNA Pneumonia", LAYOUT, ["stage_2_train_labels.csv"])
    skips = SkipCounter(options.on_bad_sample)
    boxes = read_table(root / "stage_2_train_labels.csv", id_columns=["patientId"])
    require_columns(boxes, ["patientId", "x", "y", "width", "height", "Target"], "stage_2_train_labels.csv")
    boxes["patientId"] = boxes["patientId"].astype(str).str.strip()
    rows = []
    for pid, part in boxes.groupby("patientId", sort=True):
        targets = set(pd.to_numeric(part["Target"], errors="coerce").tolist())
        if len(targets) != 1 or not targets <= {0, 1}:
            skips.bad("inconsistent Target values", str(pid), f"{sorted(targets)}")
            continue
        coords = part[["x", "y", "width", "height"]].apply(pd.to_numeric, errors="coerce").to_numpy()
        box_list = [[float(v) for v in row] for row in coords if not np.isnan(row).any()]
        rows.append({"id": pid, "group": pid, "image": f"{options.image_dir}/{pid}.dcm", "image_type": "dicom",
                     "labels.pneumonia": int(targets.pop()), "boxes": box_list})
    frame = pd.DataFrame(rows, columns=["id", "group", "image", "image_type", "labels.pneumonia", "boxes"])
    tasks = {"pneumonia": TaskSpec("pneumonia", "multiclass", ("no pneumonia", "pneumonia"))}
    info_path = root / "stage_2_detailed_class_info.csv"
    if info_path.is_file():
        info = read_table(info_path, id_columns=["patientId"])
        require_columns(info, ["patientId", "class"], info_path.name)
        classes = info.drop_duplicates().assign(patientId=lambda d: d["patientId"].astype(str).str.strip())
        conflicting = classes["patientId"][classes["patientId"].duplicated()]
        if len(conflicting):
            raise DatasetFormatError(f"{info_path.name}: patients with two classes: {sorted(set(conflicting))[:5]}")
        unknown = sorted(set(classes["class"]) - set(DETAILED_CLASSES))
        if unknown:
            raise DatasetFormatError(f"{info_path.name}: unknown class value(s) {unknown}")
        class_of = dict(zip(classes["patientId"], classes["class"], strict=True))
        frame["labels.rsna_class"] = [DETAILED_CLASSES.index(class_of[p]) if p in class_of else -1 for p in frame["id"]]
        tasks["rsna_class"] = TaskSpec("rsna_class", "multiclass", DETAILED_CLASSES)
        if options.exclude_not_normal:
            keep = frame["labels.rsna_class"] != 1
            skips.filter("'No Lung Opacity / Not Normal' (exclude_not_normal)", int((~keep).sum()))
            frame = frame.loc[keep].reset_index(drop=True)
    frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                {"val": options.val_fraction, "test": options.test_fraction})
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.pneumonia"].tolist(), ("no finding", "pneumonia"),
                                        load_template(options.caption_template))
    return finish_import(frame, tasks, root, "rsna_pneumonia", options, skips)


SPEC = AdapterSpec(
    name="rsna_pneumonia",
    summary="RSNA Pneumonia (DICOM; box rows merged per image; 2- and 3-class labels)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import rsna_pneumonia --root /data/rsna-pneumonia --out rsna.parquet",
)
