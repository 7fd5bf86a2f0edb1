"""The benchmarking paper's evaluation sets: each adapter on a tiny fixture in the dataset's public layout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medvl.data.adapters import DatasetFormatError, DatasetLayoutError, import_dataset


def test_nct_crc_he_train_and_test_folders(tmp_path: Path, files) -> None:
    for folder, n in (("NCT-CRC-HE-100K", 3), ("CRC-VAL-HE-7K", 2)):
        for code in ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"):
            for k in range(n):
                files.image(tmp_path / folder / code / f"{code}-X{k}.tif", fmt="TIFF")
    imported = import_dataset("nct_crc_he", tmp_path, {"val_fraction": 0.3})
    files.check(imported, tmp_path)
    spec = imported.tasks["tissue"]
    assert spec.classes == ("ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")  # BACK left out, as the paper
    records = imported.records.set_index("id")
    assert len(records) == 8 * 5
    assert (records.loc[records.index.str.startswith("CRC-VAL-HE-7K/"), "split"] == "test").all()
    assert set(records.loc[records.index.str.startswith("NCT-CRC-HE-100K/"), "split"]) == {"train", "val"}
    assert records.loc["CRC-VAL-HE-7K/TUM/TUM-X1", "labels.tissue"] == spec.classes.index("TUM")
    with_back = import_dataset("nct_crc_he", tmp_path, {"include_background": True})
    assert "BACK" in with_back.tasks["tissue"].classes and len(with_back.records) == 9 * 5
    (tmp_path / "CRC-VAL-HE-7K" / "MUC").rename(tmp_path / "muc_elsewhere")
    with pytest.raises(DatasetLayoutError, match=r"missing class folder\(s\) \['MUC'\]"):
        import_dataset("nct_crc_he", tmp_path)


def test_lc25000_organs_and_seeded_split(tmp_path: Path, files) -> None:
    base = tmp_path / "lung_colon_image_set"
    for organ, classes in (("lung", ("lung_aca", "lung_n", "lung_scc")), ("colon", ("colon_aca", "colon_n"))):
        for cls in classes:
            for k in range(10):
                files.image(base / f"{organ}_image_sets" / cls / f"{cls.replace('_', '')}{k}.jpeg")
    lung = import_dataset("lc25000", tmp_path)
    files.check(lung, tmp_path)
    assert lung.tasks["lung"].classes == ("lung_aca", "lung_n", "lung_scc") and len(lung.records) == 30
    colon = import_dataset("lc25000", tmp_path, {"organ": "colon", "test_fraction": 0.5})
    assert colon.tasks["colon"].classes == ("colon_aca", "colon_n") and len(colon.records) == 20
    assert "test" in set(colon.records["split"])
    again = import_dataset("lc25000", base, {"organ": "colon", "test_fraction": 0.5})  # root one level deeper
    assert list(again.records["split"]) == list(colon.records["split"])
    assert any("augmentations" in n for n in lung.info["notes"])


def test_bach_folders_checked_against_ground_truth(tmp_path: Path, files) -> None:
    photos = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    prefix = {"Normal": "n", "Benign": "b", "InSitu": "is", "Invasive": "iv"}
    for cls, p in prefix.items():
        for k in range(1, 5):
            files.image(photos / cls / f"{p}{k:03d}.tif", fmt="TIFF")
    truth = [f"{p}{k:03d}.tif,{cls}" for cls, p in prefix.items() for k in range(1, 5)]
    (photos / "microscopy_ground_truth.csv").write_text("\n".join(truth) + "\n")
    imported = import_dataset("bach", tmp_path)
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks["bach"].classes == ("Normal", "Benign", "InSitu", "Invasive")
    assert records.loc["InSitu/is002", "labels.bach"] == 2 and len(records) == 16
    truth[0] = "n001.tif,Invasive"
    (photos / "microscopy_ground_truth.csv").write_text("\n".join(truth) + "\n")
    with pytest.raises(DatasetFormatError, match="Normal/n001: ground-truth CSV disagrees"):
        import_dataset("bach", tmp_path)
    skipped = import_dataset("bach", tmp_path, {"on_bad_sample": "skip"})
    assert len(skipped.records) == 15 and skipped.info["skipped"]["counts"] == {"ground-truth CSV disagrees with the folder": 1}


def _sicap_sheet(path: Path, rows: list[tuple[str, int, int, int, int, int]], xlsx: bool) -> None:
    frame = pd.DataFrame(rows, columns=["image_name", "NC", "G3", "G4", "G5", "G4C"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if xlsx:
        frame.to_excel(path.with_suffix(".xlsx"), index=False)
    else:
        frame.to_csv(path.with_suffix(".csv"), index=False)


@pytest.mark.parametrize("xlsx", [True, False])
def test_sicapv2_partition_sheets(tmp_path: Path, files, xlsx: bool) -> None:
    if xlsx:
        pytest.importorskip("openpyxl")
    root = tmp_path / "SICAPv2"
    names = {b: [f"{b}_Block_Region_1_{k}_0_xini_{k}_yini_0.jpg" for k in range(3)] for b in ("16B01", "16B02", "17B03")}
    train = [(n, 1, 0, 0, 0, 0) for n in names["16B01"]] + [(n, 0, 0, 1, 0, 1) for n in names["16B02"]]
    test = [(names["17B03"][0], 0, 1, 0, 0, 0), (names["17B03"][1], 0, 0, 0, 1, 0), (names["17B03"][2], 0, 1, 1, 0, 0)]
    _sicap_sheet(root / "partition" / "Test" / "Train", train, xlsx)
    _sicap_sheet(root / "partition" / "Test" / "Test", test, xlsx)
    for group in names.values():
        for n in group:
            files.image(root / "images" / n)
    with pytest.raises(DatasetFormatError, match=r"17B03_Block_Region_1_2_0_xini_2_yini_0\.jpg: not exactly one"):
        import_dataset("sicapv2", tmp_path)
    imported = import_dataset("sicapv2", tmp_path, {"on_bad_sample": "skip", "val_fraction": 0.5})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks["gleason"].classes == ("NC", "G3", "G4", "G5")
    assert len(records) == 8 and records.loc[Path(names["16B02"][1]).stem, "labels.gleason"] == 2
    assert set(records.loc[records["group"] == "17B03", "split"]) == {"test"}
    assert records.groupby("group")["split"].nunique().max() == 1  # a biopsy never straddles splits


def test_ham10000_lesion_groups_and_official_test(tmp_path: Path, files) -> None:
    rows = [("HAM_1", "ISIC_0000001", "nv"), ("HAM_1", "ISIC_0000002", "nv"), ("HAM_2", "ISIC_0000003", "mel"),
            ("HAM_3", "ISIC_0000004", "bkl"), ("HAM_4", "ISIC_0000005", "vasc"), ("HAM_5", "ISIC_0000006", "df")]
    pd.DataFrame([(a, b, c, "histo", 50, "male", "back") for a, b, c in rows],
                 columns=["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]).to_csv(
        tmp_path / "HAM10000_metadata.csv", index=False)
    for k, (_, image, _) in enumerate(rows):
        files.image(tmp_path / f"HAM10000_images_part_{1 + k % 2}" / f"{image}.jpg")
    imported = import_dataset("ham10000", tmp_path, {"test_fraction": 0.4})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks["dx"].classes == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert records.loc["ISIC_0000001", "group"] == records.loc["ISIC_0000002", "group"] == "HAM_1"
    assert records.loc["ISIC_0000001", "split"] == records.loc["ISIC_0000002", "split"]
    assert records.loc["ISIC_0000002", "image"] == "HAM10000_images_part_2/ISIC_0000002.jpg"
    pd.DataFrame([("ISIC_0034524", 0, 1, 0, 0, 0, 0, 0)],
                 columns=["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]).to_csv(
        tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    files.image(tmp_path / "ISIC2018_Task3_Test_Images" / "ISIC_0034524.jpg")
    official = import_dataset("ham10000", tmp_path).records.set_index("id")
    assert official.loc["ISIC_0034524", "split"] == "test" and official.loc["ISIC_0034524", "labels.dx"] == 5
    assert set(official.drop(index="ISIC_0034524")["split"]) <= {"train", "val"}


def test_pad_ufes_20_patient_groups(tmp_path: Path, files) -> None:
    rows = [("PAT_46", 881, "PAT_46_881_939.png", "BCC"), ("PAT_46", 882, "PAT_46_882_940.png", "NEV"),
            ("PAT_9", 12, "PAT_9_12_100.png", "MEL"), ("PAT_10", 13, "PAT_10_13_101.png", "SEK"),
            ("PAT_11", 14, "PAT_11_14_102.png", "ACK")]
    pd.DataFrame([(p, lesion, "True", "ARM", diag, img, "True") for p, lesion, img, diag in rows],
                 columns=["patient_id", "lesion_id", "smoke", "region", "diagnostic", "img_id", "biopsed"]).to_csv(
        tmp_path / "metadata.csv", index=False)
    for k, (_, _, img, _) in enumerate(rows):
        files.image(tmp_path / "images" / f"imgs_part_{1 + k % 3}" / img, fmt="PNG")
    imported = import_dataset("pad_ufes_20", tmp_path, {"test_fraction": 0.4})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks["diagnostic"].classes == ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")
    assert records.loc["PAT_46_881_939", "group"] == records.loc["PAT_46_882_940", "group"] == "46"
    assert records.loc["PAT_46_882_940", "labels.diagnostic"] == 3
    assert records.loc["PAT_9_12_100", "image"] == "images/imgs_part_3/PAT_9_12_100.png"


def test_vindr_mammo_findings_birads_density(tmp_path: Path, files) -> None:
    breast = [("s1", "se1", "i1", "L", "CC", "BI-RADS 1", "DENSITY B", "training"),
              ("s1", "se1", "i2", "R", "MLO", "BI-RADS 4", "DENSITY C", "training"),
              ("s2", "se2", "i3", "L", "CC", "BI-RADS 2", "DENSITY A", "test")]
    pd.DataFrame(breast, columns=["study_id", "series_id", "image_id", "laterality", "view_position", "breast_birads",
                                  "breast_density", "split"]).to_csv(tmp_path / "breast-level_annotations.csv", index=False)
    finding = [("s1", "i1", "['No Finding']"), ("s1", "i2", "['Mass']"),
               ("s1", "i2", "['Mass', 'Suspicious Calcification']"), ("s2", "i3", "['Focal Asymmetry']")]
    pd.DataFrame([(s, i, c, "BI-RADS 4", 1, 2, 3, 4, "training") for s, i, c in finding],
                 columns=["study_id", "image_id", "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax",
                          "split"]).to_csv(tmp_path / "finding_annotations.csv", index=False)
    for study, image in (("s1", "i1"), ("s1", "i2"), ("s2", "i3")):
        files.dicom(tmp_path / "images" / study / f"{image}.dicom")
    imported = import_dataset("vindr_mammo", tmp_path, {"val_fraction": 0.0})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    findings = imported.tasks["findings"].classes
    assert len(findings) == 10 and "No Finding" not in findings
    assert records.loc["i1", "labels.findings"] == [0.0] * 10
    assert records.loc["i2", "labels.findings"][:2] == [1.0, 1.0] and sum(records.loc["i2", "labels.findings"]) == 2
    assert records.loc["i2", "labels.birads"] == 3 and records.loc["i3", "labels.density"] == 0
    assert records.loc["i3", "split"] == "test" and records.loc["i1", "image_type"] == "dicom"
    assert imported.tasks["birads"].kind == "ordinal"


def test_deepeyenet_json_list_of_entries(tmp_path: Path, files) -> None:
    def entry(split: str, name: str) -> dict:
        return {f"eyenet0420/{split}_set/{name}": {"keywords": "macular hole, vitrectomy",
                                                    "clinical-description": f"fundus photograph, {name}"}}
    layout = {"train": ["macular-hole-1.jpg", "macular-hole-2.jpg", "retinitis-pigmentosa-1.jpg"],
              "valid": ["macular-hole-3.jpg"], "test": ["retinitis-pigmentosa-2.jpg"]}
    for split, names in layout.items():
        folder = "val" if split == "valid" else split
        (tmp_path / f"DeepEyeNet_{split}.json").write_text(json.dumps([entry(folder, n) for n in names]))
        for n in names:
            files.image(tmp_path / "eyenet0420" / f"{folder}_set" / n)
    imported = import_dataset("deepeyenet", tmp_path)
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks["disease"].classes == ("macular hole", "retinitis pigmentosa")
    row = records.loc["eyenet0420/val_set/macular-hole-3"]
    assert row["split"] == "val" and row["texts"] == ["fundus photograph, macular-hole-3.jpg", "macular hole, vitrectomy"]
    only = import_dataset("deepeyenet", tmp_path, {"texts": "keywords"}).records
    assert all(t == ["macular hole, vitrectomy"] for t in only["texts"])


def test_mimic_cxr_parquet_sas_layout(tmp_path: Path, files) -> None:
    png = files.image_bytes("PNG")
    table = pa.table({"image": [png, png, png], "findings": ["Heart normal.", None, ""],
                      "impression": ["No acute process.", "Small effusion.", ""]})
    root = tmp_path / "ds"
    root.mkdir()
    pq.write_table(table, root / "data.parquet")
    with pytest.raises(DatasetFormatError, match="data/2: no findings or impression"):
        import_dataset("mimic_cxr_parquet", root, {"extract_dir": str(tmp_path / "out_images")})
    imported = import_dataset("mimic_cxr_parquet", root, {"extract_dir": str(tmp_path / "out_images"),
                                                              "on_bad_sample": "skip"})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["data/0", "texts"] == ["Heart normal. No acute process."]  # the SAS caption
    assert records.loc["data/1", "texts"] == ["Small effusion."]
    assert (tmp_path / "out_images" / records.loc["data/0", "image"]).is_file()
    pq.write_table(pa.table({"image": [{"bytes": png, "path": "x.png"}], "findings": ["A."], "impression": ["B."],
                             "dicom_id": ["d-1"]}), root / "test-00000-of-00001.parquet")
    both = import_dataset("mimic_cxr_parquet", root, {"extract_dir": str(tmp_path / "o2"), "on_bad_sample": "skip",
                                                          "texts": "sections"}).records.set_index("id")
    assert both.loc["d-1", "split"] == "test" and both.loc["d-1", "texts"] == ["A.", "B."]

