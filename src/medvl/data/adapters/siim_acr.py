"""SIIM-ACR Pneumothorax: RLE CSV + DICOM tree; patients grouped by the DICOM PatientID.

``train-rle.csv`` (header ``ImageId, EncodedPixels`` with a leading space in the second name)
or ``stage_2_train.csv`` has one row per mask; ``-1`` means no pneumothorax. Rows are merged per
image. DICOM files are found anywhere under ``dicom_dir`` by their ``<ImageId>.dcm`` name
(sorted walk). The patient id is read from each DICOM header (``group_from_dicom``), because one
patient can have several images; the split is a patient hash.
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
    find_first,
    finish_import,
    hash_split,
    normalise_id,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["LAYOUT", "SPEC", "Options", "load", "read_patient_id"]

LAYOUT = """\
<root>/train-rle.csv  or  <root>/stage_2_train.csv   (ImageId, EncodedPixels; -1 = no pneumothorax)
<root>/dicom-images-train/<study>/<series>/<ImageId>.dcm"""
_CSVS = ("train-rle.csv", "stage_2_train.csv")


class Options(CommonOptions):
    """SIIM-ACR import options."""

    dicom_dir: str = "dicom-images-train"
    group_from_dicom: bool = True
    """Read PatientID from each DICOM header (one small read per file); else each image is its own group."""


def read_patient_id(path: Path) -> str:
    """The PatientID of a DICOM file (header only), normalised."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception as exc:  # pydicom raises several error types for broken files
        raise DatasetFormatError(f"{path}: not a readable DICOM file ({exc})") from exc
    value = getattr(header, "PatientID", None)
    if not value:
        raise DatasetFormatError(f"{path}: DICOM header has no PatientID")
    return normalise_id(str(value))


def load(root: Path, options: Options) -> ImportedDataset:
    """Read SIIM-ACR labels and DICOM locations under ``root``."""
    require_paths(root, "SIIM-ACR Pneumothorax", LAYOUT, [options.dicom_dir], any_of=[list(_CSVS)])
    csv_path = find_first(root, _CSVS)
    assert csv_path is not None
    table = read_table(csv_path, id_columns=["ImageId"], skipinitialspace=True)
    require_columns(table, ["ImageId", "EncodedPixels"], csv_path.name)
    skips = SkipCounter(options.on_bad_sample)
    files = {p.stem: p for p in sorted((root / options.dicom_dir).rglob("*.dcm"))}
    table["ImageId"] = table["ImageId"].astype(str).str.strip()
    positive = table.assign(pos=table["EncodedPixels"].astype(str).str.strip() != "-1").groupby("ImageId")["pos"].any()
    rows = []
    for image_id, is_positive in positive.items():
        path = files.get(str(image_id))
        if path is None:
            skips.bad("missing file", str(image_id), f"no {image_id}.dcm under {options.dicom_dir}")
            continue
        try:
            group = read_patient_id(path) if options.group_from_dicom else str(image_id)
        except DatasetFormatError as exc:
            skips.bad("unreadable DICOM", str(image_id), str(exc))
            continue
        rows.append({"id": str(image_id), "image": path.relative_to(root).as_posix(), "image_type": "dicom",
                     "group": group, "labels.pneumothorax": int(bool(is_positive))})
    frame = pd.DataFrame(rows, columns=["id", "image", "image_type", "group", "labels.pneumothorax"])
    frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                {"val": options.val_fraction, "test": options.test_fraction})
    classes = ("normal", "pneumothorax")
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.pneumothorax"].tolist(), ("no finding", "pneumothorax"),
                                        load_template(options.caption_template))
    tasks = {"pneumothorax": TaskSpec("pneumothorax", "multiclass", classes)}
    return finish_import(frame, tasks, root, "siim_acr", options, skips, check_files=False)


SPEC = AdapterSpec(
    name="siim_acr",
    summary="SIIM-ACR Pneumothorax (RLE CSV + DICOM tree, patient id from DICOM headers)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import siim_acr --root /data/siim-acr --out siim.parquet",
)
