"""PatchCamelyon (PCam): 96×96 H&E patches from ``.h5`` files, official train/valid/test.

Files (as released, after ``gunzip``)::

    camelyonpatch_level_2_split_{train,valid,test}_x.h5   # dataset "x": (N, 96, 96, 3) uint8
    camelyonpatch_level_2_split_{train,valid,test}_y.h5   # dataset "y": (N, 1, 1, 1) uint8
    camelyonpatch_level_2_split_{train,valid,test}_meta.csv   # optional: coord_y, coord_x, tumor_patch,
                                                              #   center_tumor_patch, wsi

Patches are written as PNG (``extract_dir/pcam/<split>/<index>.png``; the manifest root is
``extract_dir``). With the meta CSV the group is the source slide (``wsi``), so the import
fails loudly if a slide occurs in two splits; without it each patch is its own group.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    encode_png,
    finish_import,
    read_table,
    require_columns,
    require_extract_dir,
    require_paths,
    write_image_file,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/camelyonpatch_level_2_split_{train,valid,test}_x.h5   (dataset x: N×96×96×3 uint8)
<root>/camelyonpatch_level_2_split_{train,valid,test}_y.h5   (dataset y: N×1×1×1)
<root>/camelyonpatch_level_2_split_{train,valid,test}_meta.csv  (optional; wsi column → group)"""
_SPLITS = {"train": "train", "valid": "val", "test": "test"}
CLASSES = ("normal", "tumor")


class Options(CommonOptions):
    """PatchCamelyon import options."""

    extract_dir: str | None = None
    group_by_slide: bool = True


def load(root: Path, options: Options) -> ImportedDataset:
    """Read PCam ``.h5`` files and write the patches as PNG files."""
    import h5py

    stem = "camelyonpatch_level_2_split_{}_{}"
    required = [f"{stem.format(s, k)}.h5" for s in _SPLITS for k in ("x", "y")]
    gz = [name for name in required if not (root / name).exists() and (root / f"{name}.gz").exists()]
    if gz:
        raise DatasetLayoutError(f"PCam: {gz} are still gzip-compressed under {root}; run gunzip on them first")
    require_paths(root, "PatchCamelyon", LAYOUT, required)
    out_root = require_extract_dir(options.extract_dir, "PatchCamelyon")
    skips = SkipCounter(options.on_bad_sample)
    rows = []
    for raw_split, split in _SPLITS.items():
        with h5py.File(root / f"{stem.format(raw_split, 'x')}.h5", "r") as fx, \
                h5py.File(root / f"{stem.format(raw_split, 'y')}.h5", "r") as fy:
            if "x" not in fx or "y" not in fy:
                raise DatasetFormatError(f"PCam {raw_split}: expected datasets 'x' and 'y', found {list(fx)} / {list(fy)}")
            x, y = fx["x"], fy["y"]
            if len(x) != len(y):
                raise DatasetFormatError(f"PCam {raw_split}: {len(x)} patches but {len(y)} labels")
            labels = y[:].reshape(len(y), -1)[:, 0].astype(int)
            if len(labels) and not set(labels.tolist()) <= {0, 1}:
                raise DatasetFormatError(f"PCam {raw_split}: labels other than 0/1")
            groups = None
            meta_path = root / f"{stem.format(raw_split, 'meta')}.csv"
            if options.group_by_slide and meta_path.is_file():
                meta = read_table(meta_path, id_columns=["wsi"])
                require_columns(meta, ["wsi"], meta_path.name)
                if len(meta) != len(x):
                    raise DatasetFormatError(f"{meta_path.name}: {len(meta)} rows for {len(x)} patches")
                groups = meta["wsi"].astype(str).str.strip().tolist()
            directory = out_root / "pcam" / split
            directory.mkdir(parents=True, exist_ok=True)
            for start in range(0, len(x), 4096):
                block = x[start:start + 4096]
                for offset, patch in enumerate(block):
                    index = start + offset
                    name = write_image_file(directory, str(index), encode_png(patch))
                    record_id = f"pcam/{split}/{index}"
                    rows.append({"id": record_id, "image": f"pcam/{split}/{name}", "split": split,
                                 "group": groups[index] if groups else record_id, "labels.tumor": int(labels[index])})
    frame = pd.DataFrame(rows)
    tasks = {"tumor": TaskSpec("tumor", "multiclass", CLASSES)}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.tumor"].tolist(), CLASSES, load_template(options.caption_template))
    return finish_import(frame, tasks, out_root, "pcam", options, skips, check_files=False)


SPEC = AdapterSpec(
    name="pcam",
    summary="PatchCamelyon .h5 patches (official splits; slide groups from the meta CSVs), written as PNG",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import pcam --root /data/pcam --out pcam.parquet",
    extracts_images=True,
)
