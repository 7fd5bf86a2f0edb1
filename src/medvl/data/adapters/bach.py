"""BACH (ICIAR 2018 Grand Challenge on BreAst Cancer Histology): microscopy photos, 4 classes.

The release unpacks to ``ICIAR2018_BACH_Challenge/Photos/{Normal,Benign,InSitu,Invasive}/*.tif``
(100 images per class, 2048×1536) with ``microscopy_ground_truth.csv`` (``<file>,<class>``, no
header) beside the folders. The class is the folder; when the ground-truth CSV is present every
listed image must agree with its folder (a disagreement is a bad sample). The challenge's test
photos have no public labels, so the split is a seeded hash: ``test_fraction`` defaults to 0.25,
the benchmarking paper's 100 test images. The release names no patient: one group per image.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    finish_import,
    hash_split,
    read_table,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.adapters.folders import class_folder_records, find_dir
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "SPEC", "Options", "load"]

#: Folder → class name, from normal tissue to invasive carcinoma.
CLASSES: dict[str, str] = {"Normal": "normal breast tissue", "Benign": "benign lesion",
                           "InSitu": "in situ carcinoma", "Invasive": "invasive carcinoma"}
LAYOUT = """\
<root>/[ICIAR2018_BACH_Challenge/]Photos/{Normal,Benign,InSitu,Invasive}/*.tif
<root>/.../Photos/microscopy_ground_truth.csv     (optional: <file name>,<class>, no header)"""


class Options(CommonOptions):
    """BACH import options."""

    test_fraction: float = Field(default=0.25, ge=0.0, lt=1.0)


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the ``Photos`` class folders under ``root``."""
    base = find_dir(root, "Photos", "BACH", LAYOUT)
    frame = class_folder_records(root, base, {f: f for f in CLASSES}, dataset="BACH", layout=LAYOUT)
    skips = SkipCounter(options.on_bad_sample)
    truth_path = base / "microscopy_ground_truth.csv"
    if truth_path.is_file():
        truth = read_table(truth_path, header=None, names=["file", "cls"])
        expected = dict(zip(truth["file"].astype(str).str.strip(), truth["cls"].astype(str).str.strip(), strict=True))
        classes = list(CLASSES)
        keep = []
        for record_id, image, cls in zip(frame["id"], frame["image"], frame["cls"], strict=True):
            listed = expected.get(Path(image).name)
            if listed is not None and listed != classes[cls]:
                skips.bad("ground-truth CSV disagrees with the folder", record_id, f"CSV {listed!r}, folder {classes[cls]!r}")
                keep.append(False)
            else:
                keep.append(True)
        frame = frame.loc[keep].reset_index(drop=True)
    frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                {"val": options.val_fraction, "test": options.test_fraction})
    classes_t = tuple(CLASSES)
    frame["labels.bach"] = frame.pop("cls").astype("int64")
    tasks = {"bach": TaskSpec("bach", "multiclass", classes_t)}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.bach"].tolist(), list(CLASSES.values()),
                                        load_template(options.caption_template))
    return finish_import(frame, tasks, root, "bach", options, skips, ["no patient ids: one group per image"],
                         check_files=False)


SPEC = AdapterSpec(
    name="bach",
    summary="BACH / ICIAR 2018 breast histology photos (Normal, Benign, InSitu, Invasive), hash split",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import bach --root /data/ICIAR2018_BACH_Challenge --out bach.parquet",
)
