"""VinDr-CXR and VinDr-PCXR (PhysioNet releases): image-level labels, official train/test.

``annotations/image_labels_{train,test}.csv`` have ``image_id`` (and in train ``rad_id``: one row
per radiologist) followed by one 0/1 column per finding. The class list is read from the header
(every column except the id/rater columns), so the adult and the paediatric release (whose
finding names differ) share this adapter. Training rows of several radiologists are combined
per image (``rater_agg``: ``majority`` = more than half, ``any`` = at least one). Images are
DICOM (``<split>/<image_id>.dicom``). The releases carry no patient id: each image is its own
group; ``val`` is an image-hash share of train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    carve_val_split,
    finish_import,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/annotations/image_labels_train.csv   (image_id, rad_id, <finding columns> 0/1)
<root>/annotations/image_labels_test.csv    (image_id, <finding columns> 0/1)
    (VinDr-PCXR keeps them at <root>/image_labels_{train,test}.csv; both places are searched)
<root>/train/<image_id>.dicom  <root>/test/<image_id>.dicom"""
_NON_LABEL = {"image_id", "rad_id", "rad_ID", "Unnamed: 0"}


class Options(CommonOptions):
    """VinDr import options."""

    variant: Literal["cxr", "pcxr"] = "cxr"
    rater_agg: Literal["majority", "any"] = "majority"
    image_ext: str = "dicom"


def _read(path: Path, split: str, agg: str, classes: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    table = read_table(path, id_columns=["image_id"])
    require_columns(table, ["image_id"], path)
    names = [c for c in table.columns if c not in _NON_LABEL]
    if classes is not None and names != classes:
        raise DatasetFormatError(f"{path}: finding columns differ from the train file: {names} vs {classes}")
    values = table[names].apply(pd.to_numeric, errors="coerce")
    bad = ~values.isin([0, 1]).to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DatasetFormatError(f"{path}, row {row}: {names[col]} = {str(table[names[col]].iloc[row])!r} is not 0 or 1")
    values["image_id"] = table["image_id"].astype(str).str.strip()
    grouped = values.groupby("image_id", sort=True)[names]
    combined = grouped.mean() > 0.5 if agg == "majority" else grouped.max() > 0
    frame = pd.DataFrame({"id": combined.index.astype(str), "split": split,
                          "raters": grouped.size().reindex(combined.index).to_numpy()})
    frame["labels.vindr"] = [[float(v) for v in row] for row in combined.to_numpy(dtype=float)]
    return frame, names


def load(root: Path, options: Options) -> ImportedDataset:
    """Read VinDr image-level labels under ``root``."""
    require_paths(root, f"VinDr-{options.variant.upper()}", LAYOUT,
                  any_of=[["annotations/image_labels_train.csv", "image_labels_train.csv"]])
    folder = root / "annotations" if (root / "annotations/image_labels_train.csv").is_file() else root
    skips = SkipCounter(options.on_bad_sample)
    train, classes = _read(folder / "image_labels_train.csv", "train", options.rater_agg, None)
    parts = [train]
    test_path = folder / "image_labels_test.csv"
    if test_path.is_file():
        parts.append(_read(test_path, "test", options.rater_agg, classes)[0])
    frame = pd.concat(parts, ignore_index=True)
    frame["image"] = [f"{s}/{i}.{options.image_ext}" for s, i in zip(frame["split"], frame["id"], strict=True)]
    frame["image_type"] = "dicom" if options.image_ext in ("dicom", "dcm") else ""
    frame["group"] = frame["id"]
    frame = carve_val_split(frame, options)
    tasks = {"vindr": TaskSpec("vindr", "multilabel", tuple(classes))}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.vindr"].tolist(), classes, load_template(options.caption_template))
    return finish_import(frame, tasks, root, f"vindr_{options.variant}", options, skips,
                         ["no patient ids in the release: one group per image"])


SPEC = AdapterSpec(
    name="vindr",
    summary="VinDr-CXR / VinDr-PCXR image-level labels (DICOM, official train/test, rater aggregation)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import vindr --root /data/vindr-cxr/1.0.0 --out vindr.parquet --set variant=cxr",
)
