"""VinDr-Mammo (PhysioNet 1.0.0): full-field digital mammograms with breast- and finding-level labels.

Files: ``breast-level_annotations.csv`` (one row per image: ``study_id, series_id, image_id,
laterality, view_position, height, width, breast_birads, breast_density, split``),
``finding_annotations.csv`` (one row per finding box, or one ``['No Finding']`` row per image:
the same columns plus ``finding_categories`` — a Python list literal such as
``"['Mass', 'Suspicious Calcification']"`` — ``finding_birads`` and box coordinates) and the
DICOMs ``images/<study_id>/<image_id>.dicom``. Tasks:

* ``findings`` multilabel over the 10 non-benign finding categories (an image whose only entry
  is ``No Finding`` is all zeros; an unknown category is a bad sample) — the benchmarking paper's
  "VinDr-Mammo, 10 classes";
* ``birads`` ordinal (``BI-RADS 1`` … ``BI-RADS 5``) and ``density`` ordinal (``DENSITY A`` … ``D``),
  per breast image.

The official ``split`` column (``training``/``test``) is kept; ``val`` is a hash of training
studies. The group is the study (one exam = one woman; the release has no separate patient id).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    carve_val_split,
    finish_import,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.manifest import TaskSpec

__all__ = ["BIRADS", "DENSITY", "FINDINGS", "LAYOUT", "SPEC", "Options", "load"]

FINDINGS: tuple[str, ...] = (
    "Mass", "Suspicious Calcification", "Asymmetry", "Focal Asymmetry", "Global Asymmetry",
    "Architectural Distortion", "Skin Thickening", "Skin Retraction", "Nipple Retraction", "Suspicious Lymph Node",
)
BIRADS: tuple[str, ...] = ("BI-RADS 1", "BI-RADS 2", "BI-RADS 3", "BI-RADS 4", "BI-RADS 5")
DENSITY: tuple[str, ...] = ("DENSITY A", "DENSITY B", "DENSITY C", "DENSITY D")
LAYOUT = """\
<root>/breast-level_annotations.csv   (study_id, series_id, image_id, laterality, view_position, breast_birads, breast_density, split)
<root>/finding_annotations.csv        (… finding_categories ["['Mass']" | "['No Finding']"], finding_birads, xmin, ymin, xmax, ymax, split)
<root>/images/<study_id>/<image_id>.dicom"""
_SPLITS = {"training": "train", "train": "train", "test": "test"}


class Options(CommonOptions):
    """VinDr-Mammo import options."""

    image_ext: str = ".dicom"
    """Extension of the image files (``.png`` if you converted the DICOMs, keeping the folder layout)."""


def _categories(cell: object, image_id: str) -> list[str]:
    try:
        values = ast.literal_eval(str(cell))
    except (ValueError, SyntaxError):
        raise DatasetFormatError(f"{image_id}: finding_categories {cell!r} is not a list literal") from None
    if not isinstance(values, (list, tuple)):
        raise DatasetFormatError(f"{image_id}: finding_categories {cell!r} is not a list")
    return [str(v).strip() for v in values]


def load(root: Path, options: Options) -> ImportedDataset:
    """Read both annotation CSVs under ``root``."""
    require_paths(root, "VinDr-Mammo", LAYOUT, ["breast-level_annotations.csv", "finding_annotations.csv"])
    breast = read_table(root / "breast-level_annotations.csv", id_columns=["study_id", "image_id"])
    require_columns(breast, ["study_id", "image_id", "breast_birads", "breast_density", "split"],
                    "breast-level_annotations.csv")
    findings = read_table(root / "finding_annotations.csv", id_columns=["image_id"])
    require_columns(findings, ["image_id", "finding_categories"], "finding_annotations.csv")
    skips = SkipCounter(options.on_bad_sample)
    per_image: dict[str, set[str]] = {}
    bad: set[str] = set()
    for image_id, cell in zip(findings["image_id"].astype(str).str.strip(), findings["finding_categories"], strict=True):
        categories = _categories(cell, image_id)
        unknown = [c for c in categories if c not in FINDINGS and c != "No Finding"]
        if unknown:
            if image_id not in bad:
                skips.bad("unknown finding category", image_id, f"{unknown}")
            bad.add(image_id)
            continue
        per_image.setdefault(image_id, set()).update(c for c in categories if c != "No Finding")
    rows = []
    ext = options.image_ext if options.image_ext.startswith(".") else f".{options.image_ext}"
    for study, image_id, birads, density, split in zip(
            breast["study_id"].astype(str).str.strip(), breast["image_id"].astype(str).str.strip(),
            breast["breast_birads"].astype(str).str.strip(), breast["breast_density"].astype(str).str.strip(),
            breast["split"].astype(str).str.strip().str.lower(), strict=True):
        if image_id in bad:
            continue
        if split not in _SPLITS:
            raise DatasetFormatError(f"breast-level_annotations.csv: image {image_id} has unknown split {split!r}")
        if birads not in BIRADS or density not in DENSITY:
            skips.bad("unknown BI-RADS or density", image_id, f"{birads!r}, {density!r}")
            continue
        present = per_image.get(image_id, set())
        rows.append({
            "id": image_id, "image": f"images/{study}/{image_id}{ext}", "group": study, "split": _SPLITS[split],
            "labels.findings": [1.0 if c in present else 0.0 for c in FINDINGS],
            "labels.birads": BIRADS.index(birads), "labels.density": DENSITY.index(density),
        })
    frame = pd.DataFrame(rows, columns=["id", "image", "group", "split", "labels.findings", "labels.birads",
                                        "labels.density"])
    if ext == ".dicom":
        frame["image_type"] = "dicom"
    frame = carve_val_split(frame, options)
    tasks = {"findings": TaskSpec("findings", "multilabel", FINDINGS),
             "birads": TaskSpec("birads", "ordinal", BIRADS),
             "density": TaskSpec("density", "ordinal", DENSITY)}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.findings"].tolist(), FINDINGS, load_template(options.caption_template))
    return finish_import(frame, tasks, root, "vindr_mammo", options, skips,
                         ["group = study_id (no separate patient id in the release)"])


SPEC = AdapterSpec(
    name="vindr_mammo",
    summary="VinDr-Mammo mammograms: 10 findings (multilabel), BI-RADS and density (ordinal), official split",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import vindr_mammo --root /data/vindr-mammo/1.0.0 --out vindr_mammo.parquet",
)
