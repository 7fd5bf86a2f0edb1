"""NIH-CXR-LT (Holste et al. 2022): ChestX-ray14 images with 20 long-tailed single-label classes.

The release adds five RadText-extracted findings (Pneumoperitoneum, Pneumomediastinum,
Subcutaneous Emphysema, Tortuous Aorta, Calcification of the Aorta) to ChestX-ray14's 14 and
"No Finding", and keeps only images with exactly one of the 20. Its label files
``nih-cxr-lt_single-label_<part>.csv`` (``train``, ``test``, ``balanced-val``, ``balanced-test``)
have an ``id`` column (the ChestX-ray14 file name, ``<patient>_<follow-up>.png``), one 0/1 column
per class and, in the release, a ``subject_id``; the patient is read from ``subject_id`` when
present, else from the file name. The images are ChestX-ray14's own (``images/`` or the
release's ``images_001/images/`` … folders, found by file name as in :mod:`.nih_cxr14`).

``protocol`` chooses which files become which split (the manifest has train/val/test):

- ``balanced`` (default; the benchmark's balanced evaluation): train → train,
  balanced-val → val, balanced-test → test;
- ``long_tailed``: train → train, balanced-val → val, the long-tailed test → test;
- ``dlilp`` (DLILP's transfer set, "NIH-LT [46, 11]"): balanced-val ∪ balanced-test → test
  (the paper's balanced evaluation set, n = 920), train → train (the pool K-shot probes draw from).

A file the protocol does not use is not read; a file it uses must exist.
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
    finish_import,
    normalise_ids,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.adapters.nih_cxr14 import image_index
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "NOVEL", "PROTOCOLS", "SPEC", "Options", "load"]

#: The 20 classes in the release's own order (its label columns and reference loader).
CLASSES: tuple[str, ...] = (
    "No Finding", "Infiltration", "Atelectasis", "Effusion", "Nodule", "Mass", "Pneumothorax", "Consolidation",
    "Pleural_Thickening", "Cardiomegaly", "Fibrosis", "Edema", "Tortuous Aorta", "Emphysema", "Pneumonia",
    "Calcification of the Aorta", "Pneumoperitoneum", "Hernia", "Subcutaneous Emphysema", "Pneumomediastinum",
)
#: DLILP's 11 classes unseen by CheXpert/MIMIC pretraining (its zero-shot "novel" subset).
NOVEL: tuple[str, ...] = (
    "Infiltration", "Mass", "Nodule", "Emphysema", "Fibrosis", "Pleural_Thickening", "Pneumoperitoneum",
    "Pneumomediastinum", "Subcutaneous Emphysema", "Tortuous Aorta", "Calcification of the Aorta",
)
#: protocol → {label-file part: manifest split}
PROTOCOLS: dict[str, dict[str, str]] = {
    "balanced": {"train": "train", "balanced-val": "val", "balanced-test": "test"},
    "long_tailed": {"train": "train", "balanced-val": "val", "test": "test"},
    "dlilp": {"train": "train", "balanced-val": "test", "balanced-test": "test"},
}
LAYOUT = """\
<root>/nih-cxr-lt_single-label_train.csv, ..._balanced-val.csv, ..._balanced-test.csv, ..._test.csv
        (id = ChestX-ray14 file name, one 0/1 column per class, subject_id)
<root>/images/*.png  or  <root>/images_001/images/*.png …   (the ChestX-ray14 images)"""


def label_file(part: str) -> str:
    """The release's file name of one label part (``train``, ``test``, ``balanced-val``, ``balanced-test``)."""
    return f"nih-cxr-lt_single-label_{part}.csv"


class Options(CommonOptions):
    """NIH-CXR-LT import options."""

    protocol: Literal["balanced", "long_tailed", "dlilp"] = "balanced"
    """Which label files become train/val/test (see the module docstring)."""


def _read_part(root: Path, part: str, skips: SkipCounter) -> pd.DataFrame:
    path = root / label_file(part)
    table = read_table(path, id_columns=["id", "subject_id"])
    require_columns(table, ["id", *CLASSES], path.name)
    values = table[list(CLASSES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    names = table["id"].astype(str).str.strip()
    positives = (values == 1).sum(axis=1)
    valid = np.isin(values, (0.0, 1.0)).all(axis=1) & (positives == 1)
    for name, count in zip(names[~valid], positives[~valid], strict=True):
        skips.bad("not single-label", f"{path.name}:{name}", f"{count} positive classes, or a value other than 0/1")
    if "subject_id" in table.columns:
        groups = normalise_ids(table["subject_id"], f"{path.name} subject_id")
    else:
        groups = normalise_ids(names.str.split("_").str[0], f"{path.name} id (patient prefix)")
    return pd.DataFrame({"name": names, "group": groups, "label": values.argmax(axis=1), "part": part})[valid]


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the NIH-CXR-LT label files of ``options.protocol`` and the ChestX-ray14 images under ``root``."""
    parts = PROTOCOLS[options.protocol]
    require_paths(root, "NIH-CXR-LT", LAYOUT, [label_file(p) for p in parts])
    skips = SkipCounter(options.on_bad_sample)
    table = pd.concat([_read_part(root, part, skips) for part in parts], ignore_index=True)
    repeated = table.loc[table["name"].duplicated(keep=False)].groupby("name")["part"].apply(sorted)
    if len(repeated):
        raise DatasetFormatError(f"NIH-CXR-LT: images in more than one label file, e.g. {dict(repeated.head(5))}")
    index = image_index(root)
    rows = []
    for name, group, label, part in table.itertuples(index=False):
        if name not in index and options.check_files:
            skips.bad("missing file", name, "not found under images*/")
            continue
        rows.append({"id": name.removesuffix(".png"), "image": index.get(name, f"images/{name}"), "group": group,
                     "split": parts[part], "labels.nihlt": int(label)})
    frame = pd.DataFrame(rows, columns=["id", "image", "group", "split", "labels.nihlt"])
    tasks = {"nihlt": TaskSpec("nihlt", "multiclass", CLASSES)}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.nihlt"].tolist(), CLASSES, load_template(options.caption_template))
    used = ", ".join(f"{part} → {split}" for part, split in parts.items())
    return finish_import(frame, tasks, root, "nih_lt", options, skips, [f"protocol {options.protocol}: {used}"],
                         check_files=False)


SPEC = AdapterSpec(
    name="nih_lt",
    summary="NIH-CXR-LT (20 long-tailed single-label CXR classes on ChestX-ray14; balanced/long-tailed/DLILP splits)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import nih_lt --root /data/nih-cxr-lt --out nih_lt.parquet --set protocol=dlilp",
)
