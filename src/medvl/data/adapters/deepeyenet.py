"""DeepEyeNet (DEN): retinal images with expert keywords and clinical descriptions (Huang et al. 2021).

The release (by request) has ``DeepEyeNet_{train,valid,test}.json`` and the images under
``eyenet0420/{train_set,val_set,test_set}/``. Each JSON file is a list of one-entry objects (or
one object) mapping an image path relative to the root to ``{"keywords": "a, b, c",
"clinical-description": "..."}``; the file name is the disease name plus a counter
(``.../suspected-multiple-evanescent-white-dot-syndrome-4.jpg``). Texts: the clinical
description and the keyword list (``texts=both``, default; or one of them), as the benchmarking
paper's retrieval task. Task ``disease`` (multiclass) is the file-name disease, classes sorted.
The release names no patient: one group per image.
"""

from __future__ import annotations

import json
import re
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
    require_paths,
)
from medvl.data.manifest import TaskSpec

__all__ = ["LAYOUT", "SPEC", "Options", "disease_of", "load"]

LAYOUT = """\
<root>/DeepEyeNet_train.json  DeepEyeNet_valid.json  DeepEyeNet_test.json
       ([{"eyenet0420/train_set/<disease>-<n>.jpg": {"keywords": "...", "clinical-description": "..."}}, ...])
<root>/eyenet0420/{train_set,val_set,test_set}/*.jpg"""
_FILES = {"train": "DeepEyeNet_train.json", "val": "DeepEyeNet_valid.json", "test": "DeepEyeNet_test.json"}
_COUNTER = re.compile(r"[-_ ]\(?\d+\)?$")


class Options(CommonOptions):
    """DeepEyeNet import options."""

    texts: Literal["both", "description", "keywords"] = "both"


def disease_of(image_path: str) -> str:
    """The disease name of a DeepEyeNet file name: the stem without its trailing counter, dashes as spaces."""
    stem = Path(image_path).stem
    return _COUNTER.sub("", stem).replace("-", " ").replace("_", " ").strip().lower()


def _entries(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from exc
    items = data if isinstance(data, list) else [data]
    out = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise DatasetFormatError(f"{path}: entry {position} is not an object")
        for key, value in item.items():
            if not isinstance(value, dict):
                raise DatasetFormatError(f"{path}: entry {key!r} is not an object with keywords / clinical-description")
            out.append((str(key).strip(), value))
    return out


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the three JSON files under ``root``."""
    require_paths(root, "DeepEyeNet", LAYOUT, list(_FILES.values()))
    skips = SkipCounter(options.on_bad_sample)
    rows = []
    for split, name in _FILES.items():
        for image, value in _entries(root / name):
            description = str(value.get("clinical-description") or value.get("clinical_description") or "").strip()
            keywords = value.get("keywords") or value.get("Keywords") or ""
            if isinstance(keywords, list):
                keywords = ", ".join(str(k) for k in keywords)
            keywords = str(keywords).strip()
            texts = {"both": [description, keywords], "description": [description], "keywords": [keywords]}[options.texts]
            texts = [t for t in texts if t]
            if not texts:
                skips.bad("no keywords / clinical description", image)
                continue
            record_id = Path(image).with_suffix("").as_posix()
            rows.append({"id": record_id, "image": image, "texts": texts, "group": record_id, "split": split,
                         "disease": disease_of(image)})
    frame = pd.DataFrame(rows, columns=["id", "image", "texts", "group", "split", "disease"])
    classes = tuple(sorted(set(frame["disease"])))
    frame["labels.disease"] = [classes.index(d) for d in frame.pop("disease")]
    tasks = {"disease": TaskSpec("disease", "multiclass", classes)} if classes else {}
    if not tasks:
        frame = frame.drop(columns=["labels.disease"])
    return finish_import(frame, tasks, root, "deepeyenet", options, skips, ["no patient ids: one group per image"])


SPEC = AdapterSpec(
    name="deepeyenet",
    summary="DeepEyeNet retinal images with keywords + clinical descriptions (official train/valid/test)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import deepeyenet --root /data/DeepEyeNet --out deepeyenet.parquet",
)
