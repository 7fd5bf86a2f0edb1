"""MIMIC-CXR-JPG adapter on tiny metadata/split/label CSVs, report files and images."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medvl.data.adapters import DatasetLayoutError, import_dataset
from medvl.data.labeller import CHEXPERT_CLASSES

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough, r/o pneumonia

 FINDINGS:

 There is a small left pleural effusion.  No pneumothorax.  Heart size is
 normal.

 IMPRESSION:

 Small left effusion.  Possible left lower lobe pneumonia.
"""
EMPTY_SECTIONS = """                                 FINAL REPORT
 INDICATION:  ___ with chest pain

 FINDINGS:

 IMPRESSION:
"""

# (dicom_id, subject_id, study_id, view, split)
IMAGES = [
    ("d1", 10000032, 50414267, "PA", "train"),
    ("d2", 10000032, 50414267, "LATERAL", "train"),
    ("d3", 10000764, 57375967, "AP", "validate"),
    ("d4", 10001122, 51234567, "PA", "test"),
]


def _gz_csv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        frame.to_csv(handle, index=False)


def _write(root: Path, files, dicom: bool = False) -> None:
    meta = pd.DataFrame([{"dicom_id": d, "subject_id": s, "study_id": st, "PerformedProcedureStepDescription": "CHEST",
                          "ViewPosition": v, "Rows": 8, "Columns": 8} for d, s, st, v, _ in IMAGES])
    _gz_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    _gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz",
            pd.DataFrame([{"dicom_id": d, "study_id": st, "subject_id": s, "split": sp} for d, s, st, _, sp in IMAGES]))
    labels = []
    for study, codes in ((50414267, {"Pleural Effusion": 1.0, "Pneumonia": -1.0, "Pneumothorax": 0.0}),
                         (57375967, {"No Finding": 1.0}),
                         (51234567, {"Atelectasis": -1.0, "Edema": 1.0})):
        row = {"subject_id": "", "study_id": study}
        row.update({c: codes.get(c, np.nan) for c in CHEXPERT_CLASSES})
        labels.append(row)
    # subject ids as strings in the label file: mixed types must not matter (joined on study id)
    for row, subject in zip(labels, ["10000032", "10000764", "10001122"], strict=True):
        row["subject_id"] = subject
    _gz_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", pd.DataFrame(labels))
    for d, s, st, _, _ in IMAGES:
        base = root / f"files/p{str(s)[:2]}/p{s}/s{st}"
        if dicom:
            files.dicom(base / f"{d}.dcm", patient_id=str(s))
        else:
            files.image(base / f"{d}.jpg")
    (root / "files/p10/p10000032/s50414267.txt").write_text(REPORT)
    (root / "files/p10/p10000764/s57375967.txt").write_text(EMPTY_SECTIONS)
    # study 51234567 has no report file


def test_labels_texts_splits(tmp_path: Path, files) -> None:
    _write(tmp_path, files)
    imported = import_dataset("mimic_cxr", tmp_path, {"uncertain": "ignore"})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert dict(records["split"]) == {"d1": "train", "d2": "train", "d3": "val", "d4": "test"}
    assert dict(records["group"]) == {"d1": "10000032", "d2": "10000032", "d3": "10000764", "d4": "10001122"}
    idx = {c: i for i, c in enumerate(CHEXPERT_CLASSES)}
    labels, mask = records.loc["d1", "labels.chexpert"], records.loc["d1", "label_mask.chexpert"]
    assert labels[idx["Pleural Effusion"]] == 1.0 and mask[idx["Pleural Effusion"]]
    assert not mask[idx["Pneumonia"]]  # uncertain → ignored
    assert mask[idx["Cardiomegaly"]] and labels[idx["Cardiomegaly"]] == 0.0  # blank → negative
    assert records.loc["d1", "texts"] == [
        "There is a small left pleural effusion.", "No pneumothorax.", "Heart size is normal.",
        "Small left effusion.", "Possible left lower lobe pneumonia.",
    ]
    assert records.loc["d3", "texts"] == []  # empty FINDINGS and IMPRESSION
    assert records.loc["d4", "texts"] == []  # no report file
    sentence_labels = records.loc["d1", "text_labels.chexpert"]
    assert len(sentence_labels) == 5
    assert sentence_labels[0][idx["Pleural Effusion"]] == 1.0
    assert sentence_labels[1][idx["Pneumothorax"]] == 0.0
    assert sentence_labels[4][idx["Pneumonia"]] == 0.0  # uncertain sentence label, policy ignore → 0
    assert sentence_labels[2][idx["No Finding"]] == 1.0
    notes = " ".join(imported.info["notes"])
    assert "1 studies without a report file" in notes and "1 reports without" in notes


def test_policies_and_frontal_filter(tmp_path: Path, files) -> None:
    _write(tmp_path, files)
    idx = {c: i for i, c in enumerate(CHEXPERT_CLASSES)}
    ones = import_dataset("mimic_cxr", tmp_path, {"uncertain": "ones", "frontal_only": True}).records.set_index("id")
    assert "d2" not in ones.index
    assert ones.loc["d1", "labels.chexpert"][idx["Pneumonia"]] == 1.0
    assert ones.loc["d1", "text_labels.chexpert"][4][idx["Pneumonia"]] == 1.0
    assert "label_mask.chexpert" not in ones.columns
    zeros = import_dataset("mimic_cxr", tmp_path, {"uncertain": "zeros",
                                                   "uncertain_per_class": {"Atelectasis": "ones"}}).records.set_index("id")
    assert zeros.loc["d1", "labels.chexpert"][idx["Pneumonia"]] == 0.0
    assert zeros.loc["d4", "labels.chexpert"][idx["Atelectasis"]] == 1.0


def test_dicom_images_and_labeller_labels(tmp_path: Path, files) -> None:
    _write(tmp_path, files, dicom=True)
    imported = import_dataset("mimic_cxr", tmp_path, {"image_format": "dicom", "labels": "labeller"})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["d1", "image"] == "files/p10/p10000032/s50414267/d1.dcm"
    assert records.loc["d1", "image_type"] == "dicom"
    idx = {c: i for i, c in enumerate(CHEXPERT_CLASSES)}
    assert records.loc["d1", "labels.chexpert"][idx["Pleural Effusion"]] == 1.0
    # studies without report text are unlabelled for the labeller: mask all false
    assert not any(records.loc["d4", "label_mask.chexpert"])


def test_require_reports_and_missing_split(tmp_path: Path, files) -> None:
    _write(tmp_path, files)
    with pytest.raises(ValueError, match="report file missing"):
        import_dataset("mimic_cxr", tmp_path, {"require_reports": True})
    imported = import_dataset("mimic_cxr", tmp_path, {"require_reports": True, "on_bad_sample": "skip"})
    assert "d4" not in set(imported.records["id"])
    assert imported.info["skipped"]["counts"] == {"report file missing": 1}


def test_manifest_feeds_the_training_dataset(tmp_path: Path, files) -> None:
    from medvl.data.dataset import ImageTextDataset, collate

    _write(tmp_path, files, dicom=True)
    manifest = import_dataset("mimic_cxr", tmp_path, {"image_format": "dicom", "uncertain": "ignore"}).to_manifest()
    dataset = ImageTextDataset(manifest, train=True, seed=0, channels=1, require_texts=False)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["pixel_values"].shape == (4, 1, 8, 8)
    assert batch["labels"]["chexpert"].shape == (4, 14)
    assert not batch["label_mask"]["chexpert"][0, CHEXPERT_CLASSES.index("Pneumonia")]
    assert batch["has_text"].tolist() == [True, True, False, False]


def test_plain_csv_metadata_reads_like_gzip(tmp_path: Path, files) -> None:
    """MIMIC-CXR-JPG metadata unpacked to plain .csv imports to the same manifest as the .csv.gz."""
    _write(tmp_path / "gz", files)
    reference = import_dataset("mimic_cxr", tmp_path / "gz").to_manifest()
    _write(tmp_path / "plain", files)
    for name in ("metadata", "split", "chexpert"):
        packed = tmp_path / "plain" / f"mimic-cxr-2.0.0-{name}.csv.gz"
        with gzip.open(packed, "rt") as handle:
            (tmp_path / "plain" / f"mimic-cxr-2.0.0-{name}.csv").write_text(handle.read())
        packed.unlink()
    plain = import_dataset("mimic_cxr", tmp_path / "plain")
    files.check(plain, tmp_path / "plain")
    assert plain.to_manifest().records.equals(reference.records)
    (tmp_path / "plain" / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(DatasetLayoutError, match=r"mimic-cxr-2\.0\.0-split\.csv\.gz or mimic-cxr-2\.0\.0-split\.csv"):
        import_dataset("mimic_cxr", tmp_path / "plain")
