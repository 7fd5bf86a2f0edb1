"""MIMIC-CXR-JPG 2.0.0 (+ the MIMIC-CXR free-text reports): images, reports, labels, official split.

One record per image (``dicom_id``); the group is the patient (``subject_id``), normalised so
that ``10000032`` from a CSV and ``p10000032`` from a path are the same patient. Study labels
come from ``mimic-cxr-2.0.0-chexpert.csv.gz`` or ``…-negbio.csv.gz`` (or from medvl's own
report labeller, ``labels=labeller``) with an uncertainty policy. Reports (FINDINGS and
IMPRESSION by default) are split into sentences; each sentence is one text, with its own
labels from the report labeller in ``text_labels.chexpert`` (as DLILP's sentence-level
supervision). The official split file decides train/val/test (``validate`` → ``val``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    UncertainPolicy,
    apply_uncertainty_policy,
    finish_import,
    normalise_ids,
    read_table,
    require_columns,
    require_paths,
    rows_as_lists,
)
from medvl.data.labeller import CHEXPERT_CLASSES, ReportLabeller, select_text, split_sentences
from medvl.data.manifest import TaskSpec

__all__ = ["LAYOUT", "SPEC", "Options", "load", "report_path"]

LAYOUT = """\
<root>/mimic-cxr-2.0.0-metadata.csv.gz   (dicom_id, subject_id, study_id, ViewPosition, ...; .csv also read)
<root>/mimic-cxr-2.0.0-split.csv.gz      (dicom_id, study_id, subject_id, split)
<root>/mimic-cxr-2.0.0-chexpert.csv.gz   (subject_id, study_id, 14 observations)   [labels=chexpert]
<root>/mimic-cxr-2.0.0-negbio.csv.gz     (same columns)                            [labels=negbio]
<root>/files/pXX/p<subject>/s<study>/<dicom_id>.jpg   (.dcm with image_format=dicom)
<reports_dir>/files/pXX/p<subject>/s<study>.txt       (MIMIC-CXR reports; reports_dir defaults to root)"""

_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}


class Options(CommonOptions):
    """MIMIC-CXR import options."""

    labels: Literal["chexpert", "negbio", "labeller"] = "chexpert"
    uncertain: UncertainPolicy = "zeros"
    uncertain_per_class: dict[str, UncertainPolicy] = Field(default_factory=dict)
    blank: Literal["zeros", "ignore"] = "zeros"
    frontal_only: bool = False
    frontal_views: list[str] = Field(default_factory=lambda: ["PA", "AP"])
    reports_dir: str | None = None
    """Directory holding ``files/pXX/p<subject>/s<study>.txt`` (default: root, then root/mimic-cxr-reports)."""
    require_reports: bool = False
    """A missing report file is a bad sample (otherwise the record keeps empty texts, counted)."""
    sections: list[str] = Field(default_factory=lambda: ["findings", "impression"])
    section_fallback: Literal["last_paragraph", "none"] = "last_paragraph"
    texts: Literal["sentences", "sections"] = "sentences"
    sentence_labels: bool = True
    """Label each text with the report labeller (``text_labels.chexpert``)."""
    image_format: Literal["jpg", "dicom"] = "jpg"


def report_path(subject: str, study: str) -> str:
    """``files/pXX/p<subject>/s<study>.txt`` for canonical (unprefixed) ids."""
    return f"files/p{subject[:2]}/p{subject}/s{study}.txt"


def _study_labels(path: Path) -> dict[str, np.ndarray]:
    table = read_table(path, id_columns=["subject_id", "study_id"])
    require_columns(table, ["study_id", *CHEXPERT_CLASSES], path)
    studies = normalise_ids(table["study_id"], f"{path.name} study_id", strip_prefix="s")
    values = table[list(CHEXPERT_CLASSES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return dict(zip(studies, values, strict=True))


def load(root: Path, options: Options) -> ImportedDataset:
    """Read MIMIC-CXR-JPG metadata, split, labels and reports under ``root``."""
    stems = ["mimic-cxr-2.0.0-metadata", "mimic-cxr-2.0.0-split"]
    if options.labels in ("chexpert", "negbio"):
        stems.append(f"mimic-cxr-2.0.0-{options.labels}")
    # PhysioNet ships .csv.gz; a plain .csv (unpacked by the user) is read the same way
    require_paths(root, "MIMIC-CXR-JPG", LAYOUT, any_of=[[f"{s}.csv.gz", f"{s}.csv"] for s in stems])
    required = [next(f"{s}{ext}" for ext in (".csv.gz", ".csv") if (root / f"{s}{ext}").is_file()) for s in stems]
    label_file = {options.labels: required[2]} if len(required) == 3 else {}
    skips = SkipCounter(options.on_bad_sample)
    notes: list[str] = []

    meta = read_table(root / required[0], id_columns=["dicom_id", "subject_id", "study_id"])
    require_columns(meta, ["dicom_id", "subject_id", "study_id", "ViewPosition"], required[0])
    split_table = read_table(root / required[1], id_columns=["dicom_id", "subject_id", "study_id"])
    require_columns(split_table, ["dicom_id", "split"], required[1])
    frame = pd.DataFrame({
        "id": meta["dicom_id"].astype(str).str.strip(),
        "group": normalise_ids(meta["subject_id"], "metadata subject_id", strip_prefix="p"),
        "study": normalise_ids(meta["study_id"], "metadata study_id", strip_prefix="s"),
        "view": meta["ViewPosition"].astype("string").fillna("").astype(str).str.strip(),
    })
    split_of = dict(zip(split_table["dicom_id"].astype(str).str.strip(), split_table["split"].astype(str).str.strip(), strict=True))
    unknown = sorted({v for v in split_of.values() if v not in _SPLITS})
    if unknown:
        raise DatasetFormatError(f"{required[1]}: unknown split value(s) {unknown}")
    frame["split"] = [_SPLITS.get(split_of.get(i, ""), "") for i in frame["id"]]
    no_split = frame["split"] == ""
    for record in frame.loc[no_split, "id"]:
        skips.bad("not in the split file", record)
    frame = frame.loc[~no_split].reset_index(drop=True)
    if options.frontal_only:
        keep = frame["view"].isin(options.frontal_views)
        skips.filter(f"view not in {options.frontal_views} (frontal_only)", int((~keep).sum()))
        frame = frame.loc[keep].reset_index(drop=True)
    ext = "jpg" if options.image_format == "jpg" else "dcm"
    frame["image"] = [f"files/p{s[:2]}/p{s}/s{st}/{i}.{ext}" for s, st, i in zip(frame["group"], frame["study"], frame["id"], strict=True)]
    frame["image_type"] = "image" if ext == "jpg" else "dicom"

    # reports → texts
    labeller = ReportLabeller(sections=options.sections, fallback=options.section_fallback)
    if options.reports_dir:
        reports_root = Path(options.reports_dir)
    else:
        reports_root = next((c for c in (root, root / "mimic-cxr-reports") if any(c.glob("files/p*/p*/s*.txt"))), root)
    study_texts: dict[str, list[str]] = {}
    study_reports: dict[str, str] = {}
    have_reports = any(reports_root.glob("files/p*/p*/s*.txt"))
    if not have_reports:
        if options.require_reports or options.labels == "labeller":
            raise DatasetFormatError(f"MIMIC-CXR: no report files files/pXX/p<subject>/s<study>.txt under {reports_root}")
        notes.append(f"no reports found under {reports_root}: texts are empty (label-only import)")
    missing_reports = empty_sections = 0
    for subject, study in sorted(set(zip(frame["group"], frame["study"], strict=True))):
        if not have_reports:
            study_texts[study] = []
            continue
        path = reports_root / report_path(subject, study)
        if not path.is_file():
            if options.require_reports:
                skips.bad("report file missing", f"study {study}", str(path))
            missing_reports += 1
            study_texts[study] = []
            continue
        report = path.read_text(encoding="utf-8", errors="replace")
        study_reports[study] = report
        parts = select_text(report, options.sections, options.section_fallback)
        if not parts:
            empty_sections += 1
        if options.texts == "sentences":
            study_texts[study] = [s for _, text in parts for s in split_sentences(text)]
        else:
            study_texts[study] = [text for _, text in parts]
    if missing_reports:
        notes.append(f"{missing_reports} studies without a report file (empty texts)")
    if empty_sections:
        notes.append(f"{empty_sections} reports without {options.sections} text (empty texts)")
    if options.require_reports:
        frame = frame.loc[[s in study_reports for s in frame["study"]]].reset_index(drop=True)
    frame["texts"] = [list(study_texts.get(s, [])) for s in frame["study"]]

    # study labels
    if options.labels == "labeller":
        labels = {study: labeller.label_report(report) for study, report in study_reports.items()}
    else:
        labels = _study_labels(root / label_file[options.labels])
    unknown_cls = sorted(set(options.uncertain_per_class) - set(CHEXPERT_CLASSES))
    if unknown_cls:
        raise DatasetFormatError(f"uncertain_per_class names unknown classes {unknown_cls}")
    policies = [options.uncertain_per_class.get(c, options.uncertain) for c in CHEXPERT_CLASSES]
    nan_row = np.full(len(CHEXPERT_CLASSES), np.nan)
    values = np.stack([labels.get(s, nan_row) for s in frame["study"]]) if len(frame) else np.zeros((0, 14))
    targets, mask = apply_uncertainty_policy(values, policies, options.blank)
    unlabelled = np.array([s not in labels for s in frame["study"]], dtype=bool)
    if unlabelled.any():
        mask[unlabelled] = False
        notes.append(f"{int(unlabelled.sum())} images of studies absent from the label file (mask all false)")
    frame["labels.chexpert"] = rows_as_lists(targets)
    if not mask.all():
        frame["label_mask.chexpert"] = rows_as_lists(mask, bool)
    if options.sentence_labels:
        cache: dict[str, list[float]] = {}
        ones = {c for c, p in zip(CHEXPERT_CLASSES, policies, strict=True) if p == "ones"}
        uncertain_to_one = np.array([c in ones for c in CHEXPERT_CLASSES])

        def sentence_targets(text: str) -> list[float]:
            if text not in cache:
                codes = labeller.sentence_vector(text)
                row = (codes == 1.0) | ((codes == -1.0) & uncertain_to_one)
                cache[text] = [float(v) for v in row]
            return cache[text]

        frame["text_labels.chexpert"] = [[sentence_targets(t) for t in texts] for texts in frame["texts"]]
    tasks = {"chexpert": TaskSpec("chexpert", "multilabel", CHEXPERT_CLASSES)}
    return finish_import(frame, tasks, root, "mimic_cxr", options, skips, notes, label_source=options.labels)


SPEC = AdapterSpec(
    name="mimic_cxr",
    summary="MIMIC-CXR-JPG images + report sentences, CheXpert/NegBio labels, official split",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import mimic_cxr --root /data/mimic-cxr-jpg/2.0.0 --out mimic.parquet --set frontal_only=true --set reports_dir=/data/mimic-cxr-reports",
)
