"""COVID-QU-Ex (official Train/Val/Test folders) and the COVID-19 Radiography Database.

COVID-QU-Ex: ``…/{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/images/*.png`` under the
``Lung Segmentation Data`` (or ``Infection Segmentation Data``) folder; the class is the folder
name. The radiography database (``variant=radiography``): ``<root>/<class>/images/*.png`` with no
split, so a seeded hash of the file name decides it (the reference used ``os.listdir`` order).
Neither release has patient ids: each image is its own group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    finish_import,
    hash_split,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
qu_ex:        <root>/**/<subset folder>/{Train,Val,Test}/{COVID-19,Non-COVID,Normal}/images/*.png
radiography:  <root>/{COVID,Normal,Lung_Opacity,Viral Pneumonia}/images/*.png"""
_SPLITS = {"train": "train", "val": "val", "test": "test"}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class Options(CommonOptions):
    """COVID-QU-Ex / COVID-19 Radiography import options."""

    variant: Literal["qu_ex", "radiography"] = "qu_ex"
    subset: Literal["lung", "infection"] = "lung"
    """Which COVID-QU-Ex folder: 'Lung Segmentation Data' or 'Infection Segmentation Data'."""


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the folder tree under ``root``."""
    if not root.is_dir():
        raise DatasetLayoutError(f"COVID-QU: root {root} is not a directory.\nExpected layout:\n{LAYOUT}")
    skips = SkipCounter(options.on_bad_sample)
    rows = []
    if options.variant == "qu_ex":
        marker = "lung segmentation" if options.subset == "lung" else "infection segmentation"
        image_dirs = sorted(p for p in root.rglob("images") if p.is_dir()
                            and p.parent.parent.name.lower() in _SPLITS
                            and any(marker in part.lower() for part in p.relative_to(root).parts))
        for folder in image_dirs:
            split, cls = _SPLITS[folder.parent.parent.name.lower()], folder.parent.name
            rows += [{"image": p.relative_to(root).as_posix(), "cls": cls, "split": split} for p in _images(folder)]
    else:
        for folder in sorted(p for p in root.glob("*/images") if p.is_dir()):
            rows += [{"image": p.relative_to(root).as_posix(), "cls": folder.parent.name, "split": ""}
                     for p in _images(folder)]
    if not rows:
        raise DatasetLayoutError(f"COVID-QU ({options.variant}): no class image folders found under {root}\n"
                                 f"Expected layout:\n{LAYOUT}")
    frame = pd.DataFrame(rows)
    classes = tuple(sorted(set(frame["cls"])))
    frame["id"] = frame["image"].str.replace(r"\.\w+$", "", regex=True)
    frame["group"] = frame["id"]
    frame["labels.covid"] = [classes.index(c) for c in frame.pop("cls")]
    if options.variant == "radiography":
        frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                    {"val": options.val_fraction, "test": options.test_fraction})
    tasks = {"covid": TaskSpec("covid", "multiclass", classes)}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.covid"].tolist(), classes, load_template(options.caption_template))
    return finish_import(frame, tasks, root, "covid_qu", options, skips,
                                                         ["no patient ids in the release: one group per image"], source=f"covid_{options.variant}", check_files=False)


SPEC = AdapterSpec(
    name="covid_qu",
    summary="COVID-QU-Ex (official Train/Val/Test folders) or COVID-19 Radiography DB (hash split)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import covid_qu --root '/data/COVID-QU-Ex' --out covid.parquet",
)
