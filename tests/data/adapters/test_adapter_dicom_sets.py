"""RSNA Pneumonia, SIIM-ACR, VinDr and COVID-QU adapters (DICOM where the dataset ships DICOM)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from medvl.data.adapters import DatasetFormatError, DatasetLayoutError, import_dataset


def test_rsna_merges_box_rows(tmp_path: Path, files) -> None:
    rows = [("p-a", 10, 20, 30, 40, 1), ("p-a", 50, 60, 10, 10, 1), ("p-b", None, None, None, None, 0),
            ("p-c", None, None, None, None, 0), ("p-d", None, None, None, None, 0)]
    pd.DataFrame(rows, columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        tmp_path / "stage_2_train_labels.csv", index=False)
    info = [("p-a", "Lung Opacity"), ("p-a", "Lung Opacity"), ("p-b", "Normal"),
            ("p-c", "No Lung Opacity / Not Normal"), ("p-d", "Normal")]
    pd.DataFrame(info, columns=["patientId", "class"]).to_csv(tmp_path / "stage_2_detailed_class_info.csv", index=False)
    for pid in ("p-a", "p-b", "p-c", "p-d"):
        files.dicom(tmp_path / f"stage_2_train_images/{pid}.dcm", patient_id=pid)
    imported = import_dataset("rsna_pneumonia", tmp_path)
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert len(records) == 4
    assert records.loc["p-a", "labels.pneumonia"] == 1 and records.loc["p-b", "labels.pneumonia"] == 0
    assert records.loc["p-a", "boxes"] == [[10.0, 20.0, 30.0, 40.0], [50.0, 60.0, 10.0, 10.0]]
    assert records.loc["p-c", "labels.rsna_class"] == 1
    assert records.loc["p-a", "image_type"] == "dicom"
    assert pydicom.dcmread(tmp_path / records.loc["p-a", "image"]).PatientID == "p-a"
    two_class = import_dataset("rsna_pneumonia", tmp_path, {"exclude_not_normal": True})
    assert "p-c" not in set(two_class.records["id"])


def test_rsna_inconsistent_target(tmp_path: Path, files) -> None:
    pd.DataFrame([("p-a", 1, 1, 1, 1, 1), ("p-a", None, None, None, None, 0)],
                 columns=["patientId", "x", "y", "width", "height", "Target"]).to_csv(
        tmp_path / "stage_2_train_labels.csv", index=False)
    files.dicom(tmp_path / "stage_2_train_images/p-a.dcm")
    with pytest.raises(DatasetFormatError, match="p-a: inconsistent Target"):
        import_dataset("rsna_pneumonia", tmp_path)


def test_siim_groups_from_dicom_headers(tmp_path: Path, files) -> None:
    # the release's header has a leading space: "ImageId, EncodedPixels"
    (tmp_path / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n1.2.3.1, -1\n1.2.3.2, 5 3 10 2\n1.2.3.2, 40 1\n1.2.3.3, -1\n1.2.3.4, -1\n")
    patients = {"1.2.3.1": "A", "1.2.3.2": "A", "1.2.3.3": "B", "1.2.3.4": "C"}
    for k, (image_id, pid) in enumerate(patients.items()):
        files.dicom(tmp_path / f"dicom-images-train/study{k}/series{k}/{image_id}.dcm", patient_id=pid)
    imported = import_dataset("siim_acr", tmp_path, {"val_fraction": 0.3, "test_fraction": 0.3})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["1.2.3.2", "labels.pneumothorax"] == 1
    assert records.loc["1.2.3.1", "labels.pneumothorax"] == 0
    assert records.loc["1.2.3.1", "group"] == records.loc["1.2.3.2", "group"] == "A"
    assert records.loc["1.2.3.1", "split"] == records.loc["1.2.3.2", "split"]
    (tmp_path / "dicom-images-train/study3/series3/1.2.3.4.dcm").unlink()
    with pytest.raises(DatasetFormatError, match=r"1\.2\.3\.4: missing file"):
        import_dataset("siim_acr", tmp_path)


def test_vindr_rater_aggregation_and_official_split(tmp_path: Path, files) -> None:
    classes = ["Aortic enlargement", "Nodule/Mass", "No finding"]
    train = [("img1", "R1", 1, 0, 0), ("img1", "R2", 1, 1, 0), ("img1", "R3", 0, 0, 1),
             ("img2", "R1", 0, 0, 1), ("img2", "R4", 0, 0, 1), ("img2", "R5", 0, 1, 0)]
    (tmp_path / "annotations").mkdir()
    pd.DataFrame(train, columns=["image_id", "rad_id", *classes]).to_csv(tmp_path / "annotations/image_labels_train.csv", index=False)
    pd.DataFrame([("img3", 0, 1, 0)], columns=["image_id", *classes]).to_csv(
        tmp_path / "annotations/image_labels_test.csv", index=False)
    for split, image in (("train", "img1"), ("train", "img2"), ("test", "img3")):
        files.dicom(tmp_path / f"{split}/{image}.dicom")
    imported = import_dataset("vindr", tmp_path, {"val_fraction": 0.0})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks["vindr"].classes == tuple(classes)
    assert records.loc["img1", "labels.vindr"] == [1.0, 0.0, 0.0]  # majority of 3 raters
    assert records.loc["img2", "labels.vindr"] == [0.0, 0.0, 1.0]
    assert records.loc["img3", "split"] == "test"
    anyrule = import_dataset("vindr", tmp_path, {"rater_agg": "any", "val_fraction": 0.0}).records.set_index("id")
    assert anyrule.loc["img1", "labels.vindr"] == [1.0, 1.0, 1.0]


def test_vindr_rejects_non_binary(tmp_path: Path) -> None:
    # VinDr-PCXR keeps the label CSVs at the top level
    pd.DataFrame([("img1", "R1", 2)], columns=["image_id", "rad_id", "Bronchitis"]).to_csv(
        tmp_path / "image_labels_train.csv", index=False)
    with pytest.raises(DatasetFormatError, match=r"Bronchitis = .2. is not 0 or 1"):
        import_dataset("vindr", tmp_path, {"variant": "pcxr"})


def test_covid_qu_official_folders(tmp_path: Path, files) -> None:
    base = tmp_path / "COVID-QU-Ex" / "Lung Segmentation Data" / "Lung Segmentation Data"
    for split in ("Train", "Val", "Test"):
        for cls in ("COVID-19", "Non-COVID", "Normal"):
            files.image(base / split / cls / "images" / f"{cls.lower()}_{split}.png", fmt="PNG")
            files.image(base / split / cls / "lung masks" / f"{cls.lower()}_{split}.png", fmt="PNG")
    imported = import_dataset("covid_qu", tmp_path)
    files.check(imported, tmp_path)
    frame = imported.records
    assert len(frame) == 9
    assert imported.tasks["covid"].classes == ("COVID-19", "Non-COVID", "Normal")
    assert frame["split"].value_counts().to_dict() == {"train": 3, "val": 3, "test": 3}
    row = frame.set_index("id").filter(like="Test/Normal", axis=0).iloc[0]
    assert row["labels.covid"] == 2


def test_covid_radiography_hash_split(tmp_path: Path, files) -> None:
    for cls in ("COVID", "Normal", "Viral Pneumonia"):
        for k in range(4):
            files.image(tmp_path / cls / "images" / f"{cls}-{k}.png", fmt="PNG")
    a = import_dataset("covid_qu", tmp_path, {"variant": "radiography", "val_fraction": 0.25, "test_fraction": 0.25})
    b = import_dataset("covid_qu", tmp_path, {"variant": "radiography", "val_fraction": 0.25, "test_fraction": 0.25})
    pd.testing.assert_frame_equal(a.records, b.records)
    assert set(a.records["split"]) <= {"train", "val", "test"}
    with pytest.raises(DatasetLayoutError, match="no class image folders"):
        import_dataset("covid_qu", tmp_path / "COVID")
