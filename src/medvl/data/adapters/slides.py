"""Whole-slide images as feature bags + reports with grades (the prostate experiments' form).

Layout::

    <root>/features/<slide_id>.pt | .h5 | .npy | .safetensors   # (n_regions, ...) features per slide
    <root>/reports.json   or   <root>/reports.csv
    <root>/splits/train_fold{k}.json, val_fold{k}.json, testset.json     # optional fold files

``reports.json`` may be a dict keyed by slide id (``{"<id>": {"label": 3, "report": "..."}}``, the
Balancing Act form) or a list of objects with the id field. ``reports.csv`` has the id, text and
grade columns (names configurable), plus optional ``patient_id``, ``split`` and ``fold``.

Folds: with fold files, a slide in ``val_fold{k}.json`` gets ``fold = k`` and the slides of
``testset.json`` go to ``test`` (fold -1); otherwise ``split``/``fold`` columns are used when
present, and the rest is assigned by a seeded group hash (``test_fraction`` to test, the other
groups to ``n_folds`` folds). Grades form an ordinal task (default ISUP 0–5).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    assert_no_group_crosses_splits,
    find_first,
    finish_import,
    hash_split,
    hash_unit,
    normalise_id,
    require_paths,
)
from medvl.data.adapters.image_text import read_records_file, split_name
from medvl.data.labeller.sections import split_sentences
from medvl.data.manifest import TaskSpec

__all__ = ["FEATURE_EXTENSIONS", "ISUP_GRADES", "LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/features/<slide_id>.{pt,h5,npy,safetensors}
<root>/reports.json  ({"<slide_id>": {"label": grade, "report": text}} or a list of objects)  or  reports.csv
<root>/splits/train_fold{k}.json, val_fold{k}.json, testset.json   (optional)"""
FEATURE_EXTENSIONS = (".pt", ".h5", ".npy", ".safetensors")
ISUP_GRADES = ("benign", "ISUP 1", "ISUP 2", "ISUP 3", "ISUP 4", "ISUP 5")
_FOLD_FILE = re.compile(r"^val_fold(\d+)\.json$")


class Options(CommonOptions):
    """Slide feature-bag import options."""

    features_dir: str = "features"
    reports_file: str | None = None
    """Default: reports.json, else reports.csv."""
    id_field: str = "slide_id"
    text_field: str = "report"
    grade_field: str = "label"
    group_field: str | None = None
    """Patient/case column; default: each slide is its own group."""
    grade_names: list[str] = Field(default_factory=lambda: list(ISUP_GRADES))
    texts: Literal["report", "sentences"] = "report"
    splits_dir: str = "splits"
    n_folds: int = Field(default=5, ge=1)


def _read_ids(path: Path) -> list[str]:
    data = read_records_file(path)
    if "key" in data.columns:
        return [normalise_id(v) for v in data["key"]]
    for column in ("slide_id", "case_id", "id"):
        if column in data.columns:
            return [normalise_id(v) for v in data[column]]
    raise DatasetFormatError(f"{path}: cannot find slide ids (a dict keyed by id, or a slide_id/case_id/id field)")


def load(root: Path, options: Options) -> ImportedDataset:
    """Read slide reports, grades, feature files and folds under ``root``."""
    candidates = [options.reports_file] if options.reports_file else ["reports.json", "reports.csv"]
    require_paths(root, "pathology slides", LAYOUT, [options.features_dir], any_of=[candidates])
    reports_path = find_first(root, candidates)
    assert reports_path is not None
    table = read_records_file(reports_path)
    id_field = "key" if "key" in table.columns and options.id_field not in table.columns else options.id_field
    for column in (id_field, options.text_field, options.grade_field):
        if column not in table.columns:
            raise DatasetFormatError(f"{reports_path.name}: missing field {column!r}; found {list(table.columns)}")
    skips = SkipCounter(options.on_bad_sample)
    features = root / options.features_dir
    rows: list[dict[str, Any]] = []
    n_grades = len(options.grade_names)
    for position, record in enumerate(table.to_dict("records")):
        slide = normalise_id(record[id_field])
        text = str(record[options.text_field] or "").strip() if record[options.text_field] is not None else ""
        try:
            grade = int(float(record[options.grade_field]))
        except (TypeError, ValueError):
            skips.bad("grade is not a number", slide, repr(record[options.grade_field]))
            continue
        if not 0 <= grade < n_grades:
            skips.bad("grade out of range", slide, f"{grade} not in [0, {n_grades})")
            continue
        if not text:
            skips.bad("empty report", slide)
            continue
        path = next((features / f"{slide}{ext}" for ext in FEATURE_EXTENSIONS if (features / f"{slide}{ext}").is_file()), None)
        if path is None:
            skips.bad("missing feature file", slide, f"no {slide}{{{','.join(FEATURE_EXTENSIONS)}}} in {features}")
            continue
        group = normalise_id(record[options.group_field]) if options.group_field else slide
        row = {"id": slide, "image": path.relative_to(root).as_posix(), "image_type": "feature_bag",
               "texts": split_sentences(text) if options.texts == "sentences" else [text],
               "group": group, "labels.grade": grade, "split": "", "fold": -1}
        if "split" in record and record["split"] not in (None, ""):
            row["split"] = split_name(record["split"], f"{reports_path.name} row {position}")
        if "fold" in record and record["fold"] not in (None, "") and pd.notna(record["fold"]):
            row["fold"] = int(record["fold"])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["id", "image", "image_type", "texts", "group", "labels.grade", "split", "fold"])
    if frame["id"].duplicated().any():
        raise DatasetFormatError(f"{reports_path.name}: duplicate slide ids {sorted(set(frame['id'][frame['id'].duplicated()]))[:5]}")
    notes: list[str] = []
    split_dir = root / options.splits_dir
    val_files = sorted((p for p in split_dir.glob("val_fold*.json") if _FOLD_FILE.match(p.name)),
                       key=lambda p: int(_FOLD_FILE.match(p.name).group(1))) if split_dir.is_dir() else []  # type: ignore[union-attr]
    if val_files:
        fold_of: dict[str, int] = {}
        for path in val_files:
            k = int(_FOLD_FILE.match(path.name).group(1))  # type: ignore[union-attr]
            for slide in _read_ids(path):
                if fold_of.setdefault(slide, k) != k:
                    raise DatasetFormatError(f"slide {slide} is in val_fold{fold_of[slide]} and val_fold{k}")
        test = set(_read_ids(split_dir / "testset.json")) if (split_dir / "testset.json").is_file() else set()
        frame["fold"] = [fold_of.get(s, -1) for s in frame["id"]]
        frame["split"] = ["test" if s in test else "train" for s in frame["id"]]
        notes.append(f"folds from {len(val_files)} val_fold files in {options.splits_dir}/")
    else:
        missing = frame["split"] == ""
        if missing.any():
            frame.loc[missing, "split"] = hash_split(frame.loc[missing, "group"].tolist(), options.split_seed,
                                                     {"test": options.test_fraction})
        no_fold = (frame["split"] != "test") & (frame["fold"] < 0)
        frame.loc[no_fold, "fold"] = [int(hash_unit(g, options.split_seed + 1) * options.n_folds)
                                      for g in frame.loc[no_fold, "group"]]
    per_group = frame.loc[frame["fold"] >= 0].groupby("group")["fold"].nunique()
    if (per_group > 1).any():
        raise DatasetFormatError(f"groups in more than one fold: {list(per_group[per_group > 1].index[:5])}")
    assert_no_group_crosses_splits(frame, "slides")
    if frame.empty:
        raise DatasetLayoutError(f"slides: no usable slide under {root} (skipped: {skips.counts})")
    tasks = {"grade": TaskSpec("grade", "ordinal", tuple(options.grade_names))}
    return finish_import(frame, tasks, root, "slides", options, skips, notes, check_files=False)


SPEC = AdapterSpec(
    name="slides",
    summary="Pathology slides as feature bags (.pt/.h5/.npy) + reports with grades, folds from files or hash",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import slides --root /data/prostate --out prostate.parquet --set group_field=patient_id",
)
