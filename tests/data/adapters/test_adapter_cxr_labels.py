"""CheXpert, PadChest and NIH ChestX-ray14 adapters on tiny CSVs in their released form."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medvl.data.adapters import DatasetFormatError, DatasetLayoutError, import_dataset
from medvl.data.adapters.chexpert import COMPETITION_TASKS
from medvl.data.adapters.padchest import parse_label_list
from medvl.data.labeller import CHEXPERT_CLASSES

IDX = {c: i for i, c in enumerate(CHEXPERT_CLASSES)}


def _chexpert_row(path: str, view: str = "Frontal", **codes: float) -> dict:
    row = {"Path": path, "Sex": "Female", "Age": 60, "Frontal/Lateral": view, "AP/PA": "AP" if view == "Frontal" else ""}
    row.update({c: codes.get(c.replace(" ", "_"), np.nan) for c in CHEXPERT_CLASSES})
    return row


def _write_chexpert(root: Path, files, n_per_class: int = 0) -> None:
    base = root / "CheXpert-v1.0-small"
    rows = [
        _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", Atelectasis=-1.0, Edema=1.0),
        _chexpert_row("CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", "Lateral", Edema=1.0),
        _chexpert_row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", No_Finding=1.0),
    ]
    # 5x200-style candidates: exactly one competition task positive, one patient each
    for k, task in enumerate(COMPETITION_TASKS):
        for j in range(n_per_class):
            pid = 100 + 10 * k + j
            rows.append(_chexpert_row(f"CheXpert-v1.0-small/train/patient{pid:05d}/study1/view1_frontal.jpg",
                                      **{task.replace(" ", "_"): 1.0}))
    valid = [_chexpert_row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", Cardiomegaly=1.0)]
    base.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(base / "train.csv", index=False)
    pd.DataFrame(valid).to_csv(base / "valid.csv", index=False)
    for row in rows + valid:
        files.image(root / row["Path"])


def test_chexpert_policies_split_groups(tmp_path: Path, files) -> None:
    _write_chexpert(tmp_path, files)
    ignore = import_dataset("chexpert", tmp_path, {"uncertain": "ignore"})
    files.check(ignore, tmp_path)
    records = ignore.records.set_index("id")
    first = "patient00001/study1/view1_frontal"
    assert records.loc[first, "group"] == "1"
    assert records.loc["patient64541/study1/view1_frontal", "split"] == "val"
    assert not records.loc[first, "label_mask.chexpert"][IDX["Atelectasis"]]
    assert records.loc[first, "labels.chexpert"][IDX["Edema"]] == 1.0
    ones = import_dataset("chexpert", tmp_path, {"uncertain": "ones", "frontal_only": True}).records.set_index("id")
    assert ones.loc[first, "labels.chexpert"][IDX["Atelectasis"]] == 1.0
    assert "patient00001/study1/view2_lateral" not in ones.index
    mixed = import_dataset("chexpert", tmp_path, {"uncertain_per_class": {"Atelectasis": "ones"}}).records.set_index("id")
    assert mixed.loc[first, "labels.chexpert"][IDX["Atelectasis"]] == 1.0


def test_chexpert_test_file_without_view_column(tmp_path: Path, files) -> None:
    _write_chexpert(tmp_path, files)
    row = _chexpert_row("CheXpert-v1.0-small/test/patient64741/study1/view1_frontal.jpg", Edema=1.0)
    pd.DataFrame([row]).drop(columns=["Sex", "Age", "Frontal/Lateral", "AP/PA"]).to_csv(
        tmp_path / "CheXpert-v1.0-small/test_labels.csv", index=False)
    files.image(tmp_path / row["Path"])
    imported = import_dataset("chexpert", tmp_path, {"test_file": "test_labels.csv", "frontal_only": True})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["patient64741/study1/view1_frontal", "split"] == "test"
    assert records.loc["patient64741/study1/view1_frontal", "view"] == "Frontal"


def test_chexpert_val_carve_keeps_patients_together(tmp_path: Path, files) -> None:
    _write_chexpert(tmp_path, files, n_per_class=4)
    (tmp_path / "CheXpert-v1.0-small/valid.csv").unlink()
    imported = import_dataset("chexpert", tmp_path, {"val_fraction": 0.5, "split_seed": 1})
    files.check(imported, tmp_path)
    assert set(imported.records["split"]) == {"train", "val"}


def test_chexpert_5x200_protocol(tmp_path: Path, files) -> None:
    _write_chexpert(tmp_path, files, n_per_class=3)
    subset = import_dataset("chexpert", tmp_path, {"protocol": "5x200", "subset_size": 2})
    files.check(subset, tmp_path)
    frame = subset.records
    assert len(frame) == 10 and set(frame["split"]) == {"test"}
    assert frame["labels.chexpert5"].value_counts().to_dict() == {k: 2 for k in range(5)}
    assert frame["group"].is_unique
    # the label agrees with the one-hot CheXpert labels
    for _, row in frame.iterrows():
        assert row["labels.chexpert"][IDX[COMPETITION_TASKS[row["labels.chexpert5"]]]] == 1.0
    again = import_dataset("chexpert", tmp_path, {"protocol": "5x200", "subset_size": 2}).records
    assert list(again["id"]) == list(frame["id"])
    with pytest.raises(DatasetFormatError, match="fewer than 4"):
        import_dataset("chexpert", tmp_path, {"protocol": "5x200", "subset_size": 4})
    held = import_dataset("chexpert", tmp_path, {"subset_size": 2, "holdout_5x200": True}).records
    assert set(held.loc[held["split"] == "test", "group"]) == set(frame["group"])


def test_chexpert_bad_label_value(tmp_path: Path, files) -> None:
    _write_chexpert(tmp_path, files)
    path = tmp_path / "CheXpert-v1.0-small/train.csv"
    table = pd.read_csv(path)
    table["Edema"] = table["Edema"].astype(object)
    table.loc[0, "Edema"] = "maybe"
    table.to_csv(path, index=False)
    with pytest.raises(DatasetFormatError, match="Edema = 'maybe'"):
        import_dataset("chexpert", tmp_path)


# ---------------------------------------------------------------------------------- PadChest

PADCHEST_ROWS = [
    # ImageID, ImageDir, PatientID (mixed int/str/zero-padded), Projection, MethodLabel, Labels
    ("a.png", 0, 111, "PA", "Physician", "['volume loss', 'vascular hilar enlargement']"),
    ("b.png", 0, "111", "L", "RNN_model", "['normal']"),
    ("c.png", 1, "000222", "AP_horizontal", "RNN_model", "['pleural effusion', ' cardiomegaly', '']"),
    ("d.png", 1, 222, "PA", "Physician", "['exclude']"),
    ("e.png", 2, 333, "PA", "Physician", None),
    ("f.png", 2, 444, "AP", "RNN_model", "['suboptimal study', ' pneumonia']"),
]


def _write_padchest(root: Path, files, rows=PADCHEST_ROWS) -> None:
    table = pd.DataFrame([{"ImageID": i, "ImageDir": d, "StudyDate_DICOM": 20140915, "StudyID": f"s{i}",
                           "PatientID": p, "PatientBirth": 1930.0, "Projection": pr, "MethodLabel": m,
                           "Report": " sin hallazg patolog .", "Labels": lab}
                          for i, d, p, pr, m, lab in rows])
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", "wt") as handle:
        table.to_csv(handle)  # the release has an unnamed index column first
    for i, d, *_ in rows:
        files.image(root / str(d) / i, fmt="PNG")


def test_padchest_labels_masks_groups(tmp_path: Path, files) -> None:
    _write_padchest(tmp_path, files)
    imported = import_dataset("padchest", tmp_path, {"val_fraction": 0.3, "test_fraction": 0.3})
    files.check(imported, tmp_path)
    spec = imported.tasks["padchest"]
    # both labels of the reference's missing-comma bug are separate classes here
    assert {"volume loss", "vascular hilar enlargement"} <= set(spec.classes)
    assert spec.classes == tuple(sorted(spec.classes))
    records = imported.records.set_index("id")
    col = {c: i for i, c in enumerate(spec.classes)}
    assert records.loc["a", "labels.padchest"][col["volume loss"]] == 1.0
    assert records.loc["c", "labels.padchest"][col["cardiomegaly"]] == 1.0  # leading space stripped
    assert all(records.loc["a", "label_mask.padchest"])
    assert not any(records.loc["d", "label_mask.padchest"])  # 'exclude'
    assert not any(records.loc["e", "label_mask.padchest"])  # missing list
    assert records.loc["f", "labels.padchest"][col["pneumonia"]] == 1.0
    # 111 (int) and "111" (str), 222 and "000222" are one patient each
    assert records.loc["a", "group"] == records.loc["b", "group"] == "111"
    assert records.loc["c", "group"] == records.loc["d", "group"] == "222"
    assert records.loc["a", "split"] == records.loc["b", "split"]
    assert records.loc["c", "image"] == "1/c.png"


def test_padchest_options(tmp_path: Path, files) -> None:
    _write_padchest(tmp_path, files)
    imported = import_dataset("padchest", tmp_path, {"classes": ["pneumonia", "no finding"], "normal_as_no_finding": True,
                                                     "frontal_only": True, "drop_unlabelled": True,
                                                     "caption_template": "radiology"})
    records = imported.records.set_index("id")
    assert "b" not in records.index  # lateral
    assert "d" not in records.index and "e" not in records.index
    assert records.loc["f", "texts"] == ["A radiology image of pneumonia."]
    assert records.loc["a", "texts"] == ["A radiology image of no finding."]
    assert any("labels outside the class list" in n for n in imported.info["notes"])


def test_padchest_partial_labels_for_a_shared_label_space(tmp_path: Path, files) -> None:
    _write_padchest(tmp_path, files)
    shared = ["pneumonia", "cardiomegaly", "lung lesion"]  # 'lung lesion' is not a PadChest label
    imported = import_dataset("padchest", tmp_path, {"classes": shared})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["c", "label_mask.padchest"] == [True, True, False]
    assert records.loc["d", "label_mask.padchest"] == [False, False, False]  # 'exclude'
    assert any("never annotated" in n for n in imported.info["notes"])
    negative = import_dataset("padchest", tmp_path, {"classes": shared, "unobserved_negative": True})
    assert negative.records.set_index("id").loc["c", "label_mask.padchest"] == [True, True, True]


def test_padchest_split_is_order_independent(tmp_path: Path, files) -> None:
    _write_padchest(tmp_path / "a", files)
    _write_padchest(tmp_path / "b", files, rows=list(reversed(PADCHEST_ROWS)))
    a = import_dataset("padchest", tmp_path / "a").records
    b = import_dataset("padchest", tmp_path / "b").records
    pd.testing.assert_frame_equal(a, b)


def test_parse_label_list_errors() -> None:
    assert parse_label_list("['a', 'b' 'c']", "x") == ["a", "bc"]  # literal Python semantics, stated
    assert parse_label_list("[]", "x") is None
    with pytest.raises(DatasetFormatError, match="row 7"):
        parse_label_list("['a', ", "row 7")


# ---------------------------------------------------------------------------------- NIH

def test_nih_official_lists_and_patients(tmp_path: Path, files) -> None:
    entries = [("00000001_000.png", "Cardiomegaly", 1), ("00000001_001.png", "Cardiomegaly|Emphysema", "1"),
               ("00000002_000.png", "No Finding", 2), ("00000003_000.png", "Effusion|Pleural_Thickening", 3),
               ("00000004_000.png", "Hernia", 4)]
    pd.DataFrame([{"Image Index": n, "Finding Labels": f, "Follow-up #": 0, "Patient ID": p, "Patient Age": 50,
                   "Patient Gender": "M", "View Position": "PA"} for n, f, p in entries]).to_csv(
        tmp_path / "Data_Entry_2017_v2020.csv", index=False)
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n00000004_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000003_000.png\n")
    for k, (name, *_) in enumerate(entries):
        files.image(tmp_path / f"images_00{k % 2 + 1}/images/{name}", fmt="PNG")
    imported = import_dataset("nih_cxr14", tmp_path, {"val_fraction": 0.4, "split_seed": 3})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    classes = imported.tasks["nih"].classes
    assert records.loc["00000001_001", "labels.nih"][classes.index("Emphysema")] == 1.0
    assert sum(records.loc["00000002_000", "labels.nih"]) == 0.0
    assert records.loc["00000003_000", "split"] == "test"
    assert records.loc["00000001_000", "split"] == records.loc["00000001_001", "split"] != "test"
    assert records.loc["00000001_001", "image"] == "images_002/images/00000001_001.png"


def _write_nih_lt(root: Path, files, parts: dict[str, list[tuple[str, str]]], subject_id: bool = True) -> None:
    """NIH-CXR-LT label files (id, the 20 one-hot class columns, subject_id) and the ChestX-ray14 PNGs."""
    from medvl.data.adapters.nih_lt import CLASSES, label_file

    for part, rows in parts.items():
        table = pd.DataFrame([{"id": name, **{c: int(c == cls) for c in CLASSES}} for name, cls in rows])
        if subject_id:
            table["subject_id"] = [int(name.split("_")[0]) for name, _ in rows]
        table.to_csv(root / label_file(part), index=False)
        for k, (name, _) in enumerate(rows):
            files.image(root / f"images_00{1 + k % 2}" / "images" / name, fmt="PNG")


NIH_LT_PARTS = {
    "train": [("00000001_000.png", "Hernia"), ("00000001_001.png", "No Finding"), ("00000002_000.png", "Mass")],
    "balanced-val": [("00000003_000.png", "Pneumoperitoneum"), ("00000004_000.png", "Tortuous Aorta")],
    "balanced-test": [("00000005_000.png", "Calcification of the Aorta"), ("00000006_000.png", "Effusion")],
    "test": [("00000005_000.png", "Calcification of the Aorta"), ("00000007_000.png", "No Finding")],
}


def test_nih_lt_protocols_split_the_label_files(tmp_path: Path, files) -> None:
    from medvl.data.adapters.nih_lt import CLASSES, NOVEL

    _write_nih_lt(tmp_path, files, NIH_LT_PARTS)
    imported = import_dataset("nih_lt", tmp_path)
    files.check(imported, tmp_path)
    spec = imported.tasks["nihlt"]
    assert spec.kind == "multiclass" and spec.classes == CLASSES and len(CLASSES) == 20 and set(NOVEL) <= set(CLASSES)
    records = imported.records.set_index("id")
    assert len(records) == 7  # the long-tailed test file is not part of the balanced protocol
    assert records.loc["00000001_000", "labels.nihlt"] == CLASSES.index("Hernia")
    assert records.loc["00000005_000", "image"] == "images_001/images/00000005_000.png"
    assert records.loc["00000001_001", "group"] == records.loc["00000001_000", "group"]
    assert records["split"].value_counts().to_dict() == {"train": 3, "val": 2, "test": 2}
    long_tailed = import_dataset("nih_lt", tmp_path, {"protocol": "long_tailed"}).records.set_index("id")
    assert set(long_tailed.index[long_tailed["split"] == "test"]) == {"00000005_000", "00000007_000"}
    dlilp = import_dataset("nih_lt", tmp_path, {"protocol": "dlilp"}).records
    assert dlilp["split"].value_counts().to_dict() == {"train": 3, "test": 4}  # both balanced sets evaluate
    # without subject_id, the patient is the file name's prefix
    (tmp_path / "no_subject").mkdir()
    _write_nih_lt(tmp_path / "no_subject", files, NIH_LT_PARTS, subject_id=False)
    again = import_dataset("nih_lt", tmp_path / "no_subject").records.set_index("id")
    assert (again["group"] == records["group"]).all()


def test_nih_lt_bad_rows_and_files_are_named(tmp_path: Path, files) -> None:
    from medvl.data.adapters.nih_lt import label_file

    _write_nih_lt(tmp_path, files, NIH_LT_PARTS)
    train = pd.read_csv(tmp_path / label_file("train"))
    train.loc[2, "Nodule"] = 1  # two positives: not single-label
    train.to_csv(tmp_path / label_file("train"), index=False)
    with pytest.raises(DatasetFormatError, match=r"train.csv:00000002_000.png: not single-label"):
        import_dataset("nih_lt", tmp_path)
    skipped = import_dataset("nih_lt", tmp_path, {"on_bad_sample": "skip"})
    assert len(skipped.records) == 6 and skipped.info["skipped"]["counts"] == {"not single-label": 1}
    (tmp_path / label_file("balanced-test")).unlink()
    with pytest.raises(DatasetLayoutError, match=r"balanced-test\.csv"):
        import_dataset("nih_lt", tmp_path)
    assert len(import_dataset("nih_lt", tmp_path, {"protocol": "long_tailed", "on_bad_sample": "skip"}).records) == 6
    pd.read_csv(tmp_path / label_file("test")).drop(columns=["Hernia"]).to_csv(tmp_path / label_file("test"), index=False)
    with pytest.raises(DatasetFormatError, match="Hernia"):
        import_dataset("nih_lt", tmp_path, {"protocol": "long_tailed", "on_bad_sample": "skip"})
    _write_nih_lt(tmp_path, files, {"balanced-test": [("00000001_000.png", "Hernia")]})  # an image in two files
    with pytest.raises(DatasetFormatError, match="more than one label file"):
        import_dataset("nih_lt", tmp_path, {"on_bad_sample": "skip"})
