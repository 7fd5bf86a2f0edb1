"""MS-COCO 2014 / 2017: captions + 80-class multi-label targets, official or Karpathy split.

Records are keyed by COCO image id (never by caption position), so an image with 6 or 7
captions cannot shift the captions of the images after it. Captions are ordered by their
annotation id. The ``objects`` task has the 80 categories in ascending category-id order
(person=1 … toothbrush=90), which is the order of ``instances_*.json``'s ``categories``
sorted by id; crowd annotations count, as in the reference preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    finish_import,
    normalise_id,
    require_paths,
)
from medvl.data.manifest import TaskSpec

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/
  annotations/instances_{train,val}<year>.json   (categories, images, annotations)
  annotations/captions_{train,val}<year>.json    (images, annotations with caption)
  train<year>/*.jpg  val<year>/*.jpg
  dataset_coco.json                              (Karpathy split; only with split_source=karpathy, which
                                                 then needs no other file: instances_* only add the objects task)"""

_KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}


class Options(CommonOptions):
    """COCO import options."""

    year: Literal[2014, 2017] = 2017
    split_source: Literal["official", "karpathy"] = "official"
    """official: train<year> → train, val<year> → val. karpathy: the splits of ``karpathy_file``
    (train+restval → train, val, test); images are taken from train2014/val2014 as listed there."""
    karpathy_file: str = "dataset_coco.json"
    drop_unlabelled: bool = False
    """Drop images without any instance annotation (the reference keeps only labelled images)."""


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from exc


def _categories(instances: list[dict[str, Any]], path: Path) -> list[tuple[int, str]]:
    merged: dict[int, str] = {}
    for data in instances:
        for cat in data.get("categories", []):
            cid, name = int(cat["id"]), str(cat["name"])
            if merged.get(cid, name) != name:
                raise DatasetFormatError(f"{path}: category id {cid} has two names ({merged[cid]!r}, {name!r})")
            merged[cid] = name
    if not merged:
        raise DatasetFormatError(f"{path}: no categories in the instances files")
    return sorted(merged.items())


def load(root: Path, options: Options) -> ImportedDataset:
    """Read COCO annotations (and the Karpathy split) under ``root``."""
    year = options.year
    subsets = ("train", "val")
    instance_files = [f"annotations/instances_{s}{year}.json" for s in subsets]
    caption_files = [f"annotations/captions_{s}{year}.json" for s in subsets]
    layout = LAYOUT.replace("<year>", str(year))
    notes = []
    if options.split_source == "karpathy":
        # the Karpathy file holds captions, split and file paths: the official files are optional
        # (only the instance files add the ``objects`` task)
        require_paths(root, f"MS-COCO {year} (Karpathy)", layout, [options.karpathy_file])
        have_instances = all((root / f).is_file() for f in instance_files)
        if not have_instances:
            notes.append(f"no annotations/instances_*{year}.json: imported without the objects task")
    else:
        require_paths(root, f"MS-COCO {year}", layout, instance_files + caption_files)
        have_instances = True
    skips = SkipCounter(options.on_bad_sample)

    labels: dict[int, set[int]] = {}
    files: dict[int, str] = {}
    categories: list[tuple[int, str]] = []
    if have_instances:
        instances = [_read_json(root / f) for f in instance_files]
        categories = _categories(instances, root / "annotations")
        column_of = {cid: i for i, (cid, _) in enumerate(categories)}
        for subset, data in zip(subsets, instances, strict=True):
            for image in data.get("images", []):
                files[int(image["id"])] = f"{subset}{year}/{image['file_name']}"
            for ann in data.get("annotations", []):
                cid = int(ann["category_id"])
                if cid not in column_of:
                    raise DatasetFormatError(f"instances_{subset}{year}.json: annotation {ann.get('id')} has unknown category {cid}")
                labels.setdefault(int(ann["image_id"]), set()).add(column_of[cid])

    captions: dict[int, list[tuple[int, str]]] = {}
    if options.split_source == "official":
        for subset in subsets:
            data = _read_json(root / f"annotations/captions_{subset}{year}.json")
            for ann in data.get("annotations", []):
                captions.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"]).strip()))

    rows: list[dict[str, Any]] = []
    if options.split_source == "official":
        for image_id, image_path in files.items():
            split = "train" if image_path.startswith("train") else "val"
            rows.append({"cocoid": image_id, "image": image_path, "split": split,
                         "texts": [c for _, c in sorted(captions.get(image_id, []))]})
    else:
        karpathy = _read_json(root / options.karpathy_file)
        for entry in karpathy.get("images", []):
            karpathy_split = _KARPATHY_SPLITS.get(str(entry.get("split")))
            if karpathy_split is None:
                raise DatasetFormatError(f"{options.karpathy_file}: image {entry.get('cocoid')} has unknown split {entry.get('split')!r}")
            image_id = int(entry["cocoid"])
            image_path = f"{entry.get('filepath', '')}/{entry['filename']}".lstrip("/")
            texts = [str(s["raw"]).strip() for s in sorted(entry.get("sentences", []), key=lambda s: int(s.get("sentid", 0)))]
            rows.append({"cocoid": image_id, "image": image_path, "split": karpathy_split, "texts": texts})

    n_classes = len(categories)
    kept: list[dict[str, Any]] = []
    for row in rows:
        image_id = row.pop("cocoid")
        present = labels.get(image_id, set())
        if options.drop_unlabelled and not present:
            if not have_instances:
                raise DatasetFormatError("drop_unlabelled=true needs annotations/instances_*.json (the object labels)")
            skips.filter("no instance annotation (drop_unlabelled)")
            continue
        if not row["texts"]:
            skips.bad("no caption", str(image_id))
            continue
        record_id = normalise_id(image_id)
        record = {"id": record_id, "group": record_id, **row}
        if have_instances:
            record["labels.objects"] = [1.0 if c in present else 0.0 for c in range(n_classes)]
        kept.append(record)
    columns = ["id", "image", "texts", "group", "split", *(["labels.objects"] if have_instances else [])]
    frame = pd.DataFrame(kept, columns=columns)
    tasks = {"objects": TaskSpec("objects", "multilabel", tuple(name for _, name in categories))} if have_instances else {}
    if have_instances:
        notes.append("objects: categories in ascending COCO category id order")
    return finish_import(frame, tasks, root, "coco", options, skips, notes, source=f"coco{year}")


SPEC = AdapterSpec(
    name="coco",
    summary="MS-COCO 2014/2017 captions + 80-class multi-label objects (official or Karpathy split)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import coco --root /data/coco --out coco.parquet --set year=2014 --set split_source=karpathy",
)
