"""SICAPv2: prostate biopsy patches with Gleason patterns (Silva-Rodríguez et al. 2020).

The release (Mendeley Data) unpacks to ``SICAPv2/images/*.jpg`` and the patient-level partition
spreadsheets ``SICAPv2/partition/Test/{Train,Test}.xlsx`` (and cross-validation folds
``partition/Validation/Val{1..4}/{Train,Test}.xlsx``) with one row per patch: ``image_name``
and one-hot columns ``NC, G3, G4, G5`` (non-cancerous, Gleason 3/4/5) plus ``G4C`` (cribriform,
a sub-pattern of G4). The task ``gleason`` is multiclass over NC, G3, G4, G5; a row without exactly
one of them set is a bad sample. ``partition=Test`` (default) gives the official train/test
split — the benchmarking paper's 2,122 test patches; ``partition=Val1`` … ``Val4`` one of the
validation folds. The group is the biopsy (the ``image_name`` prefix before ``_Block``), so a
hash-carved ``val`` never splits a biopsy. The ``.xlsx`` files need ``openpyxl`` (the ``xlsx``
extra); the same tables saved as ``.csv`` next to them are read without it.
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
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    carve_val_split,
    finish_import,
    read_table,
    require_columns,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.adapters.folders import find_dir
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "SPEC", "Options", "load", "read_sheet"]

CLASSES: tuple[str, ...] = ("NC", "G3", "G4", "G5")
LAYOUT = """\
<root>/[SICAPv2/]images/*.jpg
<root>/[SICAPv2/]partition/Test/{Train,Test}.xlsx                 (image_name, NC, G3, G4, G5, G4C)
<root>/[SICAPv2/]partition/Validation/Val{1..4}/{Train,Test}.xlsx  (partition=Val1 … Val4)
(.csv copies of the spreadsheets are read too)"""


class Options(CommonOptions):
    """SICAPv2 import options."""

    partition: Literal["Test", "Val1", "Val2", "Val3", "Val4"] = "Test"


def read_sheet(path_without_suffix: Path) -> pd.DataFrame:
    """Read ``<path>.xlsx`` (openpyxl) or ``<path>.csv``, whichever exists (xlsx first)."""
    xlsx, csv = path_without_suffix.with_suffix(".xlsx"), path_without_suffix.with_suffix(".csv")
    if xlsx.is_file():
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise DatasetFormatError(f"{xlsx}: reading .xlsx needs openpyxl (pip install 'medvl[xlsx]'), "
                                     f"or save the sheet as {csv.name}") from None
        try:
            frame = pd.read_excel(xlsx, dtype={"image_name": str})
        except (ValueError, OSError) as exc:
            raise DatasetFormatError(f"{xlsx}: cannot be read as a spreadsheet ({exc})") from exc
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame
    if csv.is_file():
        return read_table(csv, id_columns=["image_name"])
    raise DatasetLayoutError(f"SICAPv2: missing {xlsx} (or {csv.name})\nExpected layout:\n{LAYOUT}")


def _biopsy(image_name: str) -> str:
    stem = Path(image_name).stem
    return stem.split("_Block", 1)[0] if "_Block" in stem else stem


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the partition spreadsheets and the image folder under ``root``."""
    base = find_dir(root, "partition", "SICAPv2", LAYOUT).parent
    folder = base / "partition" / ("Test" if options.partition == "Test" else f"Validation/{options.partition}")
    skips = SkipCounter(options.on_bad_sample)
    parts = []
    for sheet, split in (("Train", "train"), ("Test", "test" if options.partition == "Test" else "val")):
        table = read_sheet(folder / sheet)
        require_columns(table, ["image_name", *CLASSES], folder / sheet)
        values = table[list(CLASSES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        names = table["image_name"].astype(str).str.strip()
        for name, row in zip(names, values, strict=True):
            if np.isnan(row).any() or not np.isin(row, (0.0, 1.0)).all() or row.sum() != 1:
                skips.bad("not exactly one of NC/G3/G4/G5 set", name, f"{dict(zip(CLASSES, row.tolist(), strict=True))}")
                continue
            parts.append({"id": Path(name).stem, "image": (base / "images" / name).relative_to(root).as_posix(),
                          "group": _biopsy(name), "split": split, "labels.gleason": int(row.argmax())})
    frame = pd.DataFrame(parts, columns=["id", "image", "group", "split", "labels.gleason"])
    if options.partition == "Test":
        frame = carve_val_split(frame, options)
    tasks = {"gleason": TaskSpec("gleason", "multiclass", CLASSES)}
    if options.caption_template:
        names = ["non-cancerous tissue", "Gleason pattern 3", "Gleason pattern 4", "Gleason pattern 5"]
        frame["texts"] = template_texts(frame["labels.gleason"].tolist(), names, load_template(options.caption_template))
    return finish_import(frame, tasks, root, "sicapv2", options, skips, [f"partition {options.partition}"])


SPEC = AdapterSpec(
    name="sicapv2",
    summary="SICAPv2 prostate biopsy patches, Gleason NC/G3/G4/G5 (official Test or Val1-4 partition)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import sicapv2 --root /data/SICAPv2 --out sicap.parquet",
)
