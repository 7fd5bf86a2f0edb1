"""MedMNIST+ 2D datasets (``<flag>.npz`` for 28 px, ``<flag>_<size>.npz`` for 64/128/224).

Each ``.npz`` holds ``{train,val,test}_images`` (uint8, (N, H, W) or (N, H, W, 3)) and
``{train,val,test}_labels`` ((N, 1) class index, or (N, 14) multi-hot for ChestMNIST). The
official splits are kept.

**Images are written out as PNG files** (``extract_dir/<flag>_<size>/<split>/<index>.png``,
lossless, the manifest root is ``extract_dir``) rather than referenced inside the arrays: the
manifest contract addresses one file per record, and PNGs load with the same image path as
every other dataset. Writing is skipped for files that already exist with identical bytes.
MedMNIST has no patient ids: each image is its own group.

Task kinds: ChestMNIST multilabel (14), RetinaMNIST ordinal (grades 0–4), the others
multiclass (binary sets are 2-class multiclass). Class names are those of the ``medmnist``
package's ``INFO`` (v3.0.2).
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
    encode_png,
    finish_import,
    require_extract_dir,
    require_paths,
    write_image_file,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["DATASETS", "LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/<flag>.npz            (28x28)
<root>/<flag>_<size>.npz     (size 64, 128, 224)
keys: train_images, train_labels, val_images, val_labels, test_images, test_labels"""

#: flag → (task kind, class names), from medmnist 3.0.2 ``INFO`` (2D sets only).
DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pathmnist": ("multiclass", ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                                 "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium")),
    "chestmnist": ("multilabel", ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                                  "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia")),
    "dermamnist": ("multiclass", ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                                  "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                                  "vascular lesions")),
    "octmnist": ("multiclass", ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal")),
    "pneumoniamnist": ("multiclass", ("normal", "pneumonia")),
    "retinamnist": ("ordinal", ("0", "1", "2", "3", "4")),
    "breastmnist": ("multiclass", ("malignant", "normal, benign")),
    "bloodmnist": ("multiclass", ("basophil", "eosinophil", "erythroblast",
                                  "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                                  "monocyte", "neutrophil", "platelet")),
    "tissuemnist": ("multiclass", ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                                   "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                                   "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb")),
    "organamnist": ("multiclass", ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
                                   "liver", "lung-left", "lung-right", "pancreas", "spleen")),
}
DATASETS["organcmnist"] = DATASETS["organamnist"]
DATASETS["organsmnist"] = DATASETS["organamnist"]
_SPLITS = ("train", "val", "test")


class Options(CommonOptions):
    """MedMNIST+ import options."""

    flag: Literal["pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
                  "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"]
    size: Literal[28, 64, 128, 224] = 28
    extract_dir: str | None = None


def load(root: Path, options: Options) -> ImportedDataset:
    """Read one MedMNIST+ ``.npz`` and write its images as PNG files."""
    name = options.flag if options.size == 28 else f"{options.flag}_{options.size}"
    require_paths(root, f"MedMNIST {name}", LAYOUT, [f"{name}.npz"])
    out_root = require_extract_dir(options.extract_dir, "MedMNIST")
    kind, classes = DATASETS[options.flag]
    skips = SkipCounter(options.on_bad_sample)
    rows = []
    with np.load(root / f"{name}.npz") as data:
        missing = [f"{s}_{k}" for s in _SPLITS for k in ("images", "labels") if f"{s}_{k}" not in data.files]
        if missing:
            raise DatasetFormatError(f"{name}.npz: missing arrays {missing}; found {data.files}")
        for split in _SPLITS:
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            if len(images) != len(labels):
                raise DatasetFormatError(f"{name}.npz: {len(images)} {split} images but {len(labels)} labels")
            expected = (options.size, options.size)
            if images.shape[1:3] != expected:
                raise DatasetFormatError(f"{name}.npz: {split} images are {images.shape[1:3]}, expected {expected}")
            labels = labels.reshape(len(labels), -1)
            width = len(classes) if kind == "multilabel" else 1
            if labels.shape[1] != width:
                raise DatasetFormatError(f"{name}.npz: {split}_labels has {labels.shape[1]} columns, expected {width}")
            if labels.size and (labels.min() < 0 or (kind != "multilabel" and labels.max() >= len(classes))
                                or (kind == "multilabel" and labels.max() > 1)):
                raise DatasetFormatError(f"{name}.npz: {split}_labels outside the {len(classes)} classes")
            directory = out_root / name / split
            directory.mkdir(parents=True, exist_ok=True)
            for index in range(len(images)):
                file_name = write_image_file(directory, str(index), encode_png(images[index]))
                record_id = f"{name}/{split}/{index}"
                label = [float(v) for v in labels[index]] if kind == "multilabel" else int(labels[index, 0])
                rows.append({"id": record_id, "image": f"{name}/{split}/{file_name}", "group": record_id,
                             "split": split, f"labels.{options.flag}": label})
    frame = pd.DataFrame(rows)
    tasks: dict[str, TaskSpec] = {str(options.flag): TaskSpec(options.flag, kind, classes)}  # type: ignore[arg-type]
    if options.caption_template:
        frame["texts"] = template_texts(frame[f"labels.{options.flag}"].tolist(), classes,
                                        load_template(options.caption_template))
    return finish_import(frame, tasks, out_root, "medmnist", options, skips,
                                                             ["images written as PNG; one group per image"], source=f"medmnist_{options.flag}", check_files=False)


SPEC = AdapterSpec(
    name="medmnist",
    summary="MedMNIST+ 2D .npz files (12 sets × 28/64/128/224 px), images written as PNG",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import medmnist --root /data/medmnist --out pathmnist_224.parquet --set flag=pathmnist --set size=224",
    extracts_images=True,
)
