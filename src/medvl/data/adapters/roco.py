"""ROCO (Radiology Objects in COntext): its folder/CSV release and the Parquet (Hugging Face) form.

Folder form (the ROCO GitHub release after its download script)::

    <root>/data/{train,validation,test}/{radiology,non-radiology}/
        captions.txt   # "ROCO_00020<TAB> caption"
        dlinks.txt     # "ROCO_00020<TAB>wget -r ftp://…/PMC3970251.tar.gz -P /path/to/Dir<TAB>CRIONM2014-931546.003.jpg"
        images/        # written by the release's scripts/fetch.py: ROCO_00020.jpg (current version)
                       # or <PMC id>_<image name> (older versions); both are found

(format checked against the files of the razorx89/roco-dataset repository). The PMC id comes
from the archive URL of ``dlinks.txt``; it is also the group, so figures of one article never
straddle splits. Without ``dlinks.txt`` each image is its own group. The current ``fetch.py``
saves ``images/<ROCO id>.jpg``; older versions saved ``images/<PMC id>_<image name>``; both are
found (``image_naming``).

CSV form (the Kaggle ``roco-dataset`` copy)::

    <root>/[all_data/]{train,validation,test}/radiology{train,val,test}data.csv   # id, name, caption
    <root>/[all_data/]{train,validation,test}/radiology/images/<name>

(file and column names as used by third-party loaders of that copy; the group is the PMC id at
the start of ``name`` when present).

Parquet form (e.g. the ``eltorio/ROCO-radiology`` layout)::

    <root>/**/{train,validation,test}-*.parquet   # columns image {bytes, path}, image_id, caption

Images are embedded; they are written to ``extract_dir/<split>/<image_id>.<ext>`` and the
manifest root becomes ``extract_dir``. **Every split named by the files is imported** (the
reference loader read only the test file whatever split was asked for). The Parquet form has
no article id, so each image is its own group.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    finish_import,
    require_extract_dir,
    write_image_file,
)
from medvl.data.adapters.image_text import (
    SPLIT_FILE,
    article_group,
    caption_records,
    read_records_file,
    split_name,
)

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
folder form:
<root>/data/{train,validation,test}/radiology/captions.txt  (ROCO id <TAB> caption)
<root>/data/{train,validation,test}/radiology/dlinks.txt    (ROCO id <TAB> wget … <url>/PMCnnn.tar.gz … <TAB> image name)
<root>/data/{train,validation,test}/radiology/images/ROCO_nnnnn.jpg   (current scripts/fetch.py;
                                                                        older versions: <PMC id>_<image name>)
csv form (Kaggle copy):
<root>/[all_data/]{train,validation,test}/radiology{train,val,test}data.csv   (id, name, caption)
<root>/[all_data/]{train,validation,test}/radiology/images/<name>
parquet form:
<root>/**/{train,validation,test}-*.parquet                 (image {bytes,path}, image_id, caption)"""

_SPLIT_DIRS = ("train", "validation", "test")
_PMC_ARCHIVE = re.compile(r"/(PMC\d+)\.tar\.gz")


class Options(CommonOptions):
    """ROCO import options."""

    format: Literal["auto", "folder", "csv", "parquet"] = "auto"
    image_naming: Literal["auto", "roco_id", "pmc_name"] = "auto"
    """Folder form: images named ``ROCO_nnnnn.jpg`` (the current ``scripts/fetch.py``) or
    ``<PMC id>_<image name>`` (older versions); ``auto`` looks for either, per image."""
    subset: Literal["radiology", "non-radiology", "both"] = "radiology"
    extract_dir: str | None = None
    """Where the Parquet form's embedded images are written (the manifest root)."""


def _read_tab_file(path: Path, n_columns: int) -> list[list[str]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) < n_columns:
            raise DatasetFormatError(f"{path}:{number}: expected {n_columns} tab-separated fields, got {len(parts)}")
        rows.append(parts)
    return rows


def _load_folder(root: Path, options: Options, skips: SkipCounter) -> pd.DataFrame:
    subsets = ("radiology", "non-radiology") if options.subset == "both" else (options.subset,)
    records: list[dict[str, Any]] = []
    missing = [f"data/{s}/{sub}/captions.txt" for s in _SPLIT_DIRS for sub in subsets
               if not (root / "data" / s / sub / "captions.txt").is_file()]
    if len(missing) == len(_SPLIT_DIRS) * len(subsets):
        raise DatasetLayoutError("ROCO: missing under {}:\n{}\nExpected layout:\n{}".format(
            root, "\n".join(f"  - {m}" for m in missing), LAYOUT))
    for split_dir in _SPLIT_DIRS:
        for sub in subsets:
            base = root / "data" / split_dir / sub
            if not (base / "captions.txt").is_file():
                continue
            names: dict[str, tuple[str, str]] = {}
            dlinks = _dlinks_file(base)
            if dlinks is not None:
                for number, (roco_id, link, image_name, *_) in enumerate(_read_tab_file(dlinks, 3), start=1):
                    match = _PMC_ARCHIVE.search(link)
                    if match is None:
                        raise DatasetFormatError(f"{dlinks}:{number}: no PMCnnn.tar.gz archive in {link!r}")
                    names[roco_id] = (match.group(1), image_name)
            for roco_id, *rest in _read_tab_file(base / "captions.txt", 1):
                caption = " ".join(rest).strip()
                if not caption:
                    skips.bad("empty caption", roco_id)
                    continue
                pmc_id, image_name = names.get(roco_id, (roco_id, ""))
                image, group = _image_name(base / "images", roco_id, pmc_id, image_name, options.image_naming), pmc_id
                records.append({
                    "id": roco_id, "image": f"data/{split_dir}/{sub}/images/{image}", "texts": [caption],
                    "group": group, "split": split_name(split_dir, "ROCO"), "subset": sub,
                })
    return pd.DataFrame(records, columns=["id", "image", "texts", "group", "split", "subset"])


def _dlinks_file(base: Path) -> Path | None:
    """``dlinks.txt``, else the revised ``dlinks*.txt`` some release folders carry instead."""
    if (base / "dlinks.txt").is_file():
        return base / "dlinks.txt"
    return next(iter(sorted(base.glob("dlinks*.txt"))), None)


def _image_name(images: Path, roco_id: str, pmc_id: str, image_name: str, naming: str) -> str:
    """The image file name of a record: ``ROCO_nnnnn.jpg`` (current ``fetch.py``) or
    ``<PMC id>_<image name>`` (older ``fetch.py``); ``auto`` takes whichever exists (ROCO id first)."""
    by_id = f"{roco_id}.jpg"
    by_pmc = f"{pmc_id}_{image_name}" if image_name else by_id
    if naming == "roco_id":
        return by_id
    if naming == "pmc_name":
        return by_pmc
    return by_id if (images / by_id).is_file() or not (images / by_pmc).is_file() else by_pmc


_CSV_NAMES = {"train": "radiologytraindata.csv", "validation": "radiologyvaldata.csv", "test": "radiologytestdata.csv"}


def _csv_base(root: Path) -> Path | None:
    for base in (root, root / "all_data"):
        if any((base / split / name).is_file() for split, name in _CSV_NAMES.items()):
            return base
    return None


def _load_csv(root: Path, base: Path, skips: SkipCounter) -> pd.DataFrame:
    frames = []
    for split_dir, name in _CSV_NAMES.items():
        path = base / split_dir / name
        if not path.is_file():
            continue
        table = read_records_file(path)
        prefix = (base / split_dir / "radiology" / "images").relative_to(root).as_posix() + "/"
        frames.append(caption_records(table, image_column="name", caption_column="caption", source=f"ROCO {path.name}",
                                      skips=skips, split=split_name(split_dir, "ROCO"), image_prefix=prefix,
                                      group_of=article_group, id_of=lambda p: Path(p).stem))
    return pd.concat(frames, ignore_index=True)


def _load_parquet(files: list[Path], out_dir: Path, skips: SkipCounter) -> pd.DataFrame:
    import pyarrow.parquet as pq

    records: list[dict[str, Any]] = []
    for path in files:
        match = SPLIT_FILE.match(path.name)
        if match is None:
            raise DatasetFormatError(f"{path}: cannot tell the split from the file name (expected train-/validation-/test-*)")
        split = split_name(match.group(1), str(path))
        parquet = pq.ParquetFile(path)
        columns = set(parquet.schema_arrow.names)
        missing = {"image", "image_id", "caption"} - columns
        if missing:
            raise DatasetFormatError(f"{path}: missing column(s) {sorted(missing)}; found {sorted(columns)}")
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        for batch in parquet.iter_batches(columns=["image", "image_id", "caption"], batch_size=1024):
            for row in batch.to_pylist():
                image_id = str(row["image_id"]).strip()
                caption = str(row["caption"] or "").strip()
                image = row["image"]
                data = image.get("bytes") if isinstance(image, dict) else image
                if not image_id:
                    skips.bad("empty image_id", f"{path.name}")
                    continue
                if not caption:
                    skips.bad("empty caption", image_id)
                    continue
                if not data:
                    skips.bad("no image bytes", image_id)
                    continue
                name = write_image_file(out_dir / split, image_id, bytes(data))
                records.append({"id": image_id, "image": f"{split}/{name}", "texts": [caption],
                                "group": image_id, "split": split})
    return pd.DataFrame(records, columns=["id", "image", "texts", "group", "split"])


def load(root: Path, options: Options) -> ImportedDataset:
    """Read ROCO in either of its forms."""
    skips = SkipCounter(options.on_bad_sample)
    parquet_files = sorted(p for p in root.rglob("*.parquet") if SPLIT_FILE.match(p.name)) if root.is_dir() else []
    fmt = options.format
    csv_base = _csv_base(root) if root.is_dir() else None
    if fmt == "auto":
        if (root / "data").is_dir() and any((root / "data").glob("*/*/captions.txt")):
            fmt = "folder"
        else:
            fmt = "csv" if csv_base is not None else "parquet" if parquet_files else "folder"
    if fmt == "folder":
        frame, image_root = _load_folder(root, options, skips), root
    elif fmt == "csv":
        if csv_base is None:
            raise DatasetLayoutError(f"ROCO: no radiology{{train,val,test}}data.csv under {root}[/all_data]/<split>/\n"
                                     f"Expected layout:\n{LAYOUT}")
        frame, image_root = _load_csv(root, csv_base, skips), root
    else:
        if not parquet_files:
            raise DatasetLayoutError(f"ROCO: no {{train,validation,test}}-*.parquet files under {root}\nExpected layout:\n{LAYOUT}")
        image_root = require_extract_dir(options.extract_dir, "ROCO (parquet form)")
        frame = _load_parquet(parquet_files, image_root, skips)
    return finish_import(frame, {}, image_root, "roco", options, skips, [f"format: {fmt}"])


SPEC = AdapterSpec(
    name="roco",
    summary="ROCO radiology image–caption pairs (release folder form, Kaggle CSV form or Parquet form)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import roco --root /data/roco --out roco.parquet",
    extracts_images=True,
)
