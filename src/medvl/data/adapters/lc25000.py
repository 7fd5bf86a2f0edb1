"""LC25000: lung and colon histopathology images, one folder per class (Borkowski et al. 2019).

The Kaggle / GitHub release unpacks to ``lung_colon_image_set/lung_image_sets/{lung_aca,lung_n,
lung_scc}/*.jpeg`` and ``lung_colon_image_set/colon_image_sets/{colon_aca,colon_n}/*.jpeg``
(5,000 images per class). ``organ`` picks the lung (3 classes) or colon (2 classes) task, as
the benchmarking paper's ``LC25000Lung`` / ``LC25000Colon``. There is no official split: a seeded
hash of the file name sends ``test_fraction`` (default 0.2, the paper's 3,000 / 2,000 test
images) to test and ``val_fraction`` to val.

**Caveat.** The 25,000 images are augmentations (rotations, flips) of 750 lung and 500 colon
originals, and the release does not say which image came from which original: images of one
original can land in different splits. Results on a random split are optimistic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    finish_import,
    hash_split,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.adapters.folders import class_folder_records, find_dir
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "SPEC", "Options", "load"]

#: organ → (image-set folder, {class folder: class name}) in the release's folder order.
CLASSES: dict[str, tuple[str, dict[str, str]]] = {
    "lung": ("lung_image_sets", {"lung_aca": "lung adenocarcinoma", "lung_n": "benign lung tissue",
                                 "lung_scc": "lung squamous cell carcinoma"}),
    "colon": ("colon_image_sets", {"colon_aca": "colon adenocarcinoma", "colon_n": "benign colonic tissue"}),
}
LAYOUT = """\
<root>/[lung_colon_image_set/]lung_image_sets/{lung_aca,lung_n,lung_scc}/*.jpeg
<root>/[lung_colon_image_set/]colon_image_sets/{colon_aca,colon_n}/*.jpeg"""


class Options(CommonOptions):
    """LC25000 import options."""

    organ: Literal["lung", "colon"] = "lung"
    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)


def load(root: Path, options: Options) -> ImportedDataset:
    """Read one organ's class folders under ``root``."""
    folder_name, folders = CLASSES[options.organ]
    base = find_dir(root, folder_name, "LC25000", LAYOUT)
    frame = class_folder_records(root, base, {f: f for f in folders}, dataset="LC25000", layout=LAYOUT)
    frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                {"val": options.val_fraction, "test": options.test_fraction})
    task: str = options.organ
    classes = tuple(folders)
    frame[f"labels.{task}"] = frame.pop("cls").astype("int64")
    tasks = {task: TaskSpec(task, "multiclass", classes)}
    if options.caption_template:
        frame["texts"] = template_texts(frame[f"labels.{task}"].tolist(), [folders[c] for c in classes],
                                        load_template(options.caption_template))
    notes = ["images are augmentations of fewer originals (not identified in the release); "
             "a random split can put augmentations of one original in train and test"]
    return finish_import(frame, tasks, root, "lc25000", options, SkipCounter(options.on_bad_sample), notes,
                         source=f"lc25000_{options.organ}", check_files=False)


SPEC = AdapterSpec(
    name="lc25000",
    summary="LC25000 lung (3 classes) or colon (2 classes) histopathology, hash split",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import lc25000 --root /data/LC25000 --out lc25000_lung.parquet --set organ=lung",
)
