"""NCT-CRC-HE-100K / CRC-VAL-HE-7K: colorectal H&E tissue tiles in one folder per class.

The Zenodo release (Kather et al. 2018) has ``NCT-CRC-HE-100K/<CLASS>/<CLASS>-<code>.tif``
(training, Macenko-normalised; ``NCT-CRC-HE-100K-NONORM`` without normalisation) and
``CRC-VAL-HE-7K/<CLASS>/*.tif`` (the independent test set from other patients). Classes are
the release's nine folder codes; the benchmarking paper (and PathMNIST's 8+1 classes) leaves out
``BACK`` (background), which ``include_background`` restores. CRC-VAL-HE-7K without background
has 6,333 tiles — the "NCT-CRC-HE-100K, 6,333 samples" row of the benchmarking paper's Table 2.
The release names no patient or slide per tile: each tile is its own group, and ``val`` is a
hash of tiles of the training folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    carve_val_split,
    finish_import,
    hash_split,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.adapters.folders import class_folder_records
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "SPEC", "Options", "load"]

#: Folder code → tissue class, in the release's alphabetical folder order.
CLASSES: dict[str, str] = {
    "ADI": "adipose", "BACK": "background", "DEB": "debris", "LYM": "lymphocytes", "MUC": "mucus",
    "MUS": "smooth muscle", "NORM": "normal colon mucosa", "STR": "cancer-associated stroma",
    "TUM": "colorectal adenocarcinoma epithelium",
}
LAYOUT = """\
<root>/NCT-CRC-HE-100K/{ADI,BACK,DEB,LYM,MUC,MUS,NORM,STR,TUM}/*.tif        (train; or NCT-CRC-HE-100K-NONORM)
<root>/CRC-VAL-HE-7K/{ADI,BACK,DEB,LYM,MUC,MUS,NORM,STR,TUM}/*.tif          (test)"""


class Options(CommonOptions):
    """NCT-CRC-HE import options."""

    train_dir: str | None = "NCT-CRC-HE-100K"
    """Training folder (``NCT-CRC-HE-100K-NONORM`` for the unnormalised tiles; null: test set only)."""
    test_dir: str | None = "CRC-VAL-HE-7K"
    """Test folder (null: training folder only, with a hash ``test_fraction``)."""
    include_background: bool = False
    """Keep the ``BACK`` class (the benchmarking paper's 8-class task leaves it out)."""


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the class folders under ``root``."""
    folders = {code: code for code in CLASSES if options.include_background or code != "BACK"}
    parts = []
    for folder, split in ((options.train_dir, "train"), (options.test_dir, "test")):
        if folder is None:
            continue
        if not (root / folder).is_dir():
            raise DatasetLayoutError(f"NCT-CRC-HE: missing folder {root / folder}\nExpected layout:\n{LAYOUT}")
        parts.append(class_folder_records(root, root / folder, folders, split=split, id_prefix=f"{folder}/",
                                          dataset="NCT-CRC-HE", layout=LAYOUT))
    if not parts:
        raise DatasetLayoutError("NCT-CRC-HE: train_dir and test_dir are both null; nothing to import")
    frame = pd.concat(parts, ignore_index=True)
    skips = SkipCounter(options.on_bad_sample)
    if options.test_dir is None:
        frame["split"] = hash_split(frame["group"].tolist(), options.split_seed, {"test": options.test_fraction})
    frame = carve_val_split(frame, options)
    classes = tuple(folders)
    frame["labels.tissue"] = frame.pop("cls").astype("int64")
    tasks = {"tissue": TaskSpec("tissue", "multiclass", classes)}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.tissue"].tolist(), [CLASSES[c] for c in classes],
                                        load_template(options.caption_template))
    notes = ["no patient/slide ids in the release: one group per tile"]
    return finish_import(frame, tasks, root, "nct_crc_he", options, skips, notes, check_files=False)


SPEC = AdapterSpec(
    name="nct_crc_he",
    summary="NCT-CRC-HE-100K (train) + CRC-VAL-HE-7K (test) colorectal tissue tiles, 8 or 9 classes",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import nct_crc_he --root /data/nct-crc-he --out nct.parquet",
)
