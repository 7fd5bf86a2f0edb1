"""CheXpert (v1.0 and v1.0-small): train/valid CSVs, uncertainty policies, the 5×200 subset.

Labels are the 14 observations of the CSVs (1 positive, 0 negative, -1 uncertain, blank not
mentioned), turned into targets + mask by the uncertainty policy (``zeros`` = U-Zeros, ``ones``
= U-Ones, ``ignore`` = U-Ignore: masked out), per class if wished. Official split:
``train.csv`` → train (minus a patient-hash ``val_fraction`` if asked, default none because the
official ``valid.csv`` exists), ``valid.csv`` → val, an optional test CSV → test.

``protocol=5x200`` builds the CheXpert 5×200 evaluation subset (GLoRIA/DLILP protocol): frontal
training images with exactly one positive among the five competition tasks (the other four
negative or blank), one image per patient, ``subset_size`` per class picked by a seeded hash
(not file order). ``holdout_5x200=true`` with the full protocol moves those patients' records
to ``test`` so pre-training never sees them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    UncertainPolicy,
    apply_uncertainty_policy,
    carve_val_split,
    finish_import,
    hash_unit,
    normalise_id,
    read_table,
    require_columns,
    rows_as_lists,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.labeller.rules import CHEXPERT_CLASSES
from medvl.data.manifest import TaskSpec

__all__ = ["COMPETITION_TASKS", "LAYOUT", "SPEC", "Options", "load", "select_5x200"]

LAYOUT = """\
<root>/CheXpert-v1.0-small/train.csv   (Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations)
<root>/CheXpert-v1.0-small/valid.csv
<root>/CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg
(CheXpert-v1.0/ works the same; Path values are relative to <root>)"""

#: The five CheXpert competition tasks (the 5×200 classes), in the usual order.
COMPETITION_TASKS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
_PATIENT = re.compile(r"patient(\d+)")


class Options(CommonOptions):
    """CheXpert import options."""

    val_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    uncertain: UncertainPolicy = "zeros"
    uncertain_per_class: dict[str, UncertainPolicy] = Field(default_factory=dict)
    """Per-class override, e.g. ``{Atelectasis: ones, Edema: ones}`` (the CheXpert paper's best mix)."""
    blank: Literal["zeros", "ignore"] = "zeros"
    frontal_only: bool = False
    protocol: Literal["full", "5x200"] = "full"
    subset_size: int = Field(default=200, ge=1)
    holdout_5x200: bool = False
    test_file: str | None = None
    """An extra labelled CSV (``Path`` + the 14 observations; ``Frontal/Lateral`` optional, else read
    from the file name) imported as ``test``, relative to the dataset folder."""


def _dataset_dir(root: Path) -> Path:
    if (root / "train.csv").is_file():
        return root
    for name in ("CheXpert-v1.0-small", "CheXpert-v1.0"):
        if (root / name / "train.csv").is_file():
            return root / name
    raise DatasetLayoutError(f"CheXpert: no train.csv in {root} or {root}/CheXpert-v1.0[-small]/\nExpected layout:\n{LAYOUT}")


def _read_split(path: Path, split: str) -> tuple[pd.DataFrame, np.ndarray]:
    table = read_table(path, id_columns=["Path"])
    require_columns(table, ["Path", *CHEXPERT_CLASSES], path)
    paths = table["Path"].astype(str).str.strip()
    patients = []
    for position, value in enumerate(paths):
        match = _PATIENT.search(value)
        if match is None:
            raise DatasetFormatError(f"{path}, row {position}: no patientNNNNN component in Path {value!r}")
        patients.append(normalise_id(match.group(1)))
    frame = pd.DataFrame({
        "image": paths, "group": patients, "split": split,
    })
    if "Frontal/Lateral" in table.columns:
        frame["view"] = table["Frontal/Lateral"].astype(str).str.strip()
    else:  # e.g. the test-label CSV: the view is in the file name (view1_frontal.jpg)
        frame["view"] = np.where(paths.str.lower().str.contains("frontal"), "Frontal", "Lateral")
    frame["id"] = frame["image"].str.replace(r"^.*?(patient\d+/.*)\.\w+$", r"\1", regex=True)
    values = table[list(CHEXPERT_CLASSES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    raw = table[list(CHEXPERT_CLASSES)].astype("string").fillna("").to_numpy(dtype=object)
    bad = np.isnan(values) & (raw != "")
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DatasetFormatError(f"{path}, row {row}: {CHEXPERT_CLASSES[col]} = {raw[row, col]!r} is not 1, 0, -1 or blank")
    return frame, values


def select_5x200(frame: pd.DataFrame, values: np.ndarray, size: int, seed: int) -> pd.DataFrame:
    """The 5×200 subset: frontal, exactly one competition task positive (others 0/blank),
    one image per patient, ``size`` per class by seeded hash. Returns rows with column ``cls``."""
    columns = [CHEXPERT_CLASSES.index(c) for c in COMPETITION_TASKS]
    sub = np.nan_to_num(values[:, columns], nan=0.0)
    eligible = (frame["view"].str.lower() == "frontal").to_numpy() & ((sub == 1).sum(1) == 1) & np.isin(sub, (0, 1)).all(1)
    candidates = frame.loc[eligible].copy()
    candidates["cls"] = sub[eligible].argmax(1)
    candidates["rank"] = [hash_unit(i, seed) for i in candidates["id"]]
    candidates = candidates.sort_values(["rank", "id"]).drop_duplicates("group", keep="first")
    picked = {int(c): part.head(size) for c, part in candidates.groupby("cls", sort=True)}
    counts = {name: len(picked.get(c, ())) for c, name in enumerate(COMPETITION_TASKS)}
    short = {name: n for name, n in counts.items() if n < size}
    if short:
        raise DatasetFormatError(f"CheXpert 5x200: fewer than {size} eligible images (one per patient) for {short}")
    return pd.concat([picked[c] for c in range(len(COMPETITION_TASKS))]).drop(columns=["rank"])


def load(root: Path, options: Options) -> ImportedDataset:
    """Read CheXpert CSVs under ``root``."""
    data_dir = _dataset_dir(root)
    image_root = data_dir.parent
    skips = SkipCounter(options.on_bad_sample)
    parts = [_read_split(data_dir / "train.csv", "train")]
    if (data_dir / "valid.csv").is_file():
        parts.append(_read_split(data_dir / "valid.csv", "val"))
    if options.test_file:
        if not (data_dir / options.test_file).is_file():
            raise DatasetLayoutError(f"CheXpert: test_file {data_dir / options.test_file} does not exist")
        parts.append(_read_split(data_dir / options.test_file, "test"))
    values = np.concatenate([v for _, v in parts])
    frame = pd.concat([f for f, _ in parts], ignore_index=True)
    unknown = sorted(set(options.uncertain_per_class) - set(CHEXPERT_CLASSES))
    if unknown:
        raise DatasetFormatError(f"uncertain_per_class names unknown classes {unknown}; classes: {list(CHEXPERT_CLASSES)}")
    policies = [options.uncertain_per_class.get(c, options.uncertain) for c in CHEXPERT_CLASSES]
    targets, mask = apply_uncertainty_policy(values, policies, options.blank)
    frame["labels.chexpert"] = rows_as_lists(targets)
    if not mask.all():
        frame["label_mask.chexpert"] = rows_as_lists(mask, bool)
    tasks = {"chexpert": TaskSpec("chexpert", "multilabel", CHEXPERT_CLASSES)}

    if options.protocol == "5x200":
        train = frame["split"] == "train"
        subset = select_5x200(frame.loc[train], values[train.to_numpy()], options.subset_size, options.split_seed)
        frame = subset.assign(split="test")
        frame["labels.chexpert5"] = frame.pop("cls").astype("int64")
        tasks["chexpert5"] = TaskSpec("chexpert5", "multiclass", COMPETITION_TASKS)
    else:
        if options.holdout_5x200:
            train = frame["split"] == "train"
            subset = select_5x200(frame.loc[train], values[train.to_numpy()], options.subset_size, options.split_seed)
            frame.loc[frame["group"].isin(set(subset["group"])), "split"] = "test"
        if options.frontal_only:
            keep = frame["view"].str.lower() == "frontal"
            skips.filter("lateral view (frontal_only)", int((~keep).sum()))
            frame = frame.loc[keep].reset_index(drop=True)
        frame = carve_val_split(frame, options)
    if options.caption_template:
        template = load_template(options.caption_template)
        masks = frame["label_mask.chexpert"].tolist() if "label_mask.chexpert" in frame.columns else None
        frame["texts"] = template_texts(frame["labels.chexpert"].tolist(), CHEXPERT_CLASSES, template, masks)
    return finish_import(frame, tasks, image_root, "chexpert", options, skips)


SPEC = AdapterSpec(
    name="chexpert",
    summary="CheXpert train/valid CSVs (14 observations, uncertainty policies, 5×200 subset)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import chexpert --root /data/chexpert --out chexpert.parquet --set uncertain=ones",
)
