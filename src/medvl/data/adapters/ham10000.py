"""HAM10000 ("Skin Cancer MNIST"): dermatoscopic images of pigmented lesions, 7 diagnoses.

The Harvard Dataverse / Kaggle release has ``HAM10000_metadata.csv`` (``lesion_id, image_id,
dx, dx_type, age, sex, localization``) and the images split over ``HAM10000_images_part_1/`` and
``HAM10000_images_part_2/`` (``ISIC_nnnnnnn.jpg``); images anywhere under the root are indexed
by file name. ``dx`` ∈ {akiec, bcc, bkl, df, mel, nv, vasc}. **Several images show one lesion**,
so the group is ``lesion_id``: a lesion never straddles splits (a random image split leaks).
With the ISIC 2018 Task 3 test set present (``ISIC2018_Task3_Test_GroundTruth.csv``: ``image``
+ one-hot ``MEL, NV, BCC, AKIEC, BKL, DF, VASC``, images ``ISIC2018_Task3_Test_Images/``) it
becomes ``test``; otherwise ``test_fraction`` (default 0.2: the benchmarking paper's
"SkinCancer", 2,003 of 10,015 images) of the lesions is hashed to test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    finish_import,
    hash_split,
    normalise_ids,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.adapters.folders import index_images
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "SPEC", "Options", "load"]

#: ``dx`` code → diagnosis, alphabetical by code (DermaMNIST's order).
CLASSES: dict[str, str] = {
    "akiec": "actinic keratoses and intraepithelial carcinoma", "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesions", "df": "dermatofibroma", "mel": "melanoma",
    "nv": "melanocytic nevi", "vasc": "vascular lesions",
}
LAYOUT = """\
<root>/HAM10000_metadata.csv                       (lesion_id, image_id, dx, dx_type, age, sex, localization)
<root>/HAM10000_images_part_1/ISIC_nnnnnnn.jpg  <root>/HAM10000_images_part_2/…   (any folder under root)
<root>/ISIC2018_Task3_Test_GroundTruth.csv         (optional official test: image, MEL, NV, BCC, AKIEC, BKL, DF, VASC)
<root>/ISIC2018_Task3_Test_Images/*.jpg"""
_TEST_FILE = "ISIC2018_Task3_Test_GroundTruth.csv"


class Options(CommonOptions):
    """HAM10000 import options."""

    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    use_official_test: bool = True
    """Use the ISIC 2018 Task 3 test set as ``test`` when its ground-truth CSV is present."""


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the metadata CSV, the optional ISIC 2018 test labels and the image folders."""
    require_paths(root, "HAM10000", LAYOUT, ["HAM10000_metadata.csv"])
    table = read_table(root / "HAM10000_metadata.csv", id_columns=["lesion_id", "image_id"])
    require_columns(table, ["lesion_id", "image_id", "dx"], "HAM10000_metadata.csv")
    index = index_images(root, [root])
    skips = SkipCounter(options.on_bad_sample)
    codes = list(CLASSES)
    rows = []
    lesions = normalise_ids(table["lesion_id"], "HAM10000_metadata.csv lesion_id")
    for image_id, dx, lesion in zip(table["image_id"].astype(str).str.strip(), table["dx"].astype(str).str.strip(),
                                    lesions, strict=True):
        if dx not in CLASSES:
            skips.bad("unknown dx", image_id, f"{dx!r} not in {codes}")
            continue
        rows.append({"id": image_id, "image": index.get(f"{image_id}.jpg", f"HAM10000_images/{image_id}.jpg"),
                     "group": lesion, "split": "", "labels.dx": codes.index(dx)})
    frame = pd.DataFrame(rows, columns=["id", "image", "group", "split", "labels.dx"])
    notes = []
    test_path = root / _TEST_FILE
    if options.use_official_test and test_path.is_file():
        truth = read_table(test_path, id_columns=["image"])
        columns = [c.upper() for c in codes]
        require_columns(truth, ["image", *columns], _TEST_FILE)
        onehot = truth[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        test_rows = []
        for image_id, row in zip(truth["image"].astype(str).str.strip(), onehot, strict=True):
            if np.isnan(row).any() or row.sum() != 1:
                skips.bad("test label is not one-hot", image_id)
                continue
            test_rows.append({"id": image_id, "image": index.get(f"{image_id}.jpg", f"ISIC2018_Task3_Test_Images/{image_id}.jpg"),
                              "group": f"test:{image_id}", "split": "test", "labels.dx": int(row.argmax())})
        frame["split"] = hash_split(frame["group"].tolist(), options.split_seed, {"val": options.val_fraction})
        frame = pd.concat([frame, pd.DataFrame(test_rows, columns=frame.columns)], ignore_index=True)
        notes.append("test = ISIC 2018 Task 3 test set (no lesion ids: one group per test image)")
    else:
        frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                    {"val": options.val_fraction, "test": options.test_fraction})
        notes.append("split by lesion_id hash (several images per lesion stay together)")
    tasks = {"dx": TaskSpec("dx", "multiclass", tuple(codes))}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.dx"].tolist(), list(CLASSES.values()),
                                        load_template(options.caption_template))
    return finish_import(frame, tasks, root, "ham10000", options, skips, notes)


SPEC = AdapterSpec(
    name="ham10000",
    summary="HAM10000 / Skin Cancer MNIST dermatoscopy, 7 diagnoses, lesion-level split (ISIC 2018 test optional)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import ham10000 --root /data/HAM10000 --out ham10000.parquet",
)
