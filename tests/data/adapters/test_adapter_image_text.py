"""Flickr30k, ROCO (both forms), PMC-OA and Quilt-1M adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medvl.data.adapters import DatasetFormatError, DatasetLayoutError, import_dataset


def test_flickr30k_csv_and_karpathy_agree(tmp_path: Path, files) -> None:
    rows = [("1000.jpg", ["a dog runs", "a dog", "dog", "brown dog", "running dog", "sixth caption"], "train"),
            ("2000.jpg", ["a cat"] * 5, "val"), ("3000.jpg", ["a bird"] * 5, "test")]
    pd.DataFrame([{"raw": json.dumps(c), "sentids": "[]", "split": s, "filename": f, "img_id": k}
                  for k, (f, c, s) in enumerate(rows)]).to_csv(tmp_path / "flickr_annotations_30k.csv", index=False)
    karpathy = {"images": [{"filename": f, "split": s, "sentences": [{"raw": c, "sentid": j} for j, c in enumerate(cs)]}
                           for f, cs, s in rows]}
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(karpathy))
    for f, *_ in rows:
        files.image(tmp_path / "flickr30k-images" / f)
    csv = import_dataset("flickr30k", tmp_path, {"format": "csv"})
    kar = import_dataset("flickr30k", tmp_path, {"format": "karpathy"})
    files.check(csv, tmp_path)
    pd.testing.assert_frame_equal(csv.records, kar.records)
    records = csv.records.set_index("id")
    assert len(records.loc["1000", "texts"]) == 6
    assert dict(records["split"]) == {"1000": "train", "2000": "val", "3000": "test"}


def _roco_folder(root: Path, files) -> None:
    # captions.txt / dlinks.txt lines as in the razorx89/roco-dataset release
    article = {"ROCO_00001": "PMC111", "ROCO_00002": "PMC111", "ROCO_00003": "PMC333", "ROCO_00004": "PMC444"}
    for split, ids in (("train", ["ROCO_00001", "ROCO_00002"]), ("validation", ["ROCO_00003"]), ("test", ["ROCO_00004"])):
        base = root / "data" / split / "radiology"
        base.mkdir(parents=True)
        (base / "captions.txt").write_text("".join(f"{i}\t CT scan number {i[-1]} .\n" for i in ids))
        (base / "dlinks.txt").write_text("".join(
            f"{i}\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/1e/ed/{article[i]}.tar.gz -P /path/to/Dir\tfig{i[-1]}.jpg\n"
            for i in ids))
        for i in ids:
            files.image(base / "images" / f"{article[i]}_fig{i[-1]}.jpg")


def test_roco_folder_form(tmp_path: Path, files) -> None:
    _roco_folder(tmp_path, files)
    imported = import_dataset("roco", tmp_path)
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert dict(records["split"]) == {"ROCO_00001": "train", "ROCO_00002": "train", "ROCO_00003": "val", "ROCO_00004": "test"}
    assert records.loc["ROCO_00001", "group"] == records.loc["ROCO_00002", "group"] == "PMC111"
    assert records.loc["ROCO_00003", "texts"] == ["CT scan number 3 ."]
    assert records.loc["ROCO_00003", "image"] == "data/validation/radiology/images/PMC333_fig3.jpg"


def test_roco_kaggle_csv_form(tmp_path: Path, files) -> None:
    base = tmp_path / "all_data"
    for split, csv_name, names in (("train", "radiologytraindata.csv", ["PMC1_a.jpg", "PMC1_b.jpg"]),
                                   ("validation", "radiologyvaldata.csv", ["PMC2_a.jpg"]),
                                   ("test", "radiologytestdata.csv", ["PMC3_a.jpg"])):
        (base / split).mkdir(parents=True)
        pd.DataFrame({"id": [f"ROCO_{n}" for n in names], "name": names, "caption": [f" caption {n}" for n in names]}).to_csv(
            base / split / csv_name, index=False)
        for n in names:
            files.image(base / split / "radiology" / "images" / n)
    imported = import_dataset("roco", tmp_path)
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["PMC1_a", "group"] == records.loc["PMC1_b", "group"] == "PMC1"
    assert records.loc["PMC2_a", "split"] == "val"
    assert records.loc["PMC3_a", "image"] == "all_data/test/radiology/images/PMC3_a.jpg"
    assert records.loc["PMC3_a", "texts"] == ["caption PMC3_a.jpg"]


def test_roco_parquet_form_imports_every_split(tmp_path: Path, files) -> None:
    data = tmp_path / "roco" / "data"
    data.mkdir(parents=True)
    for split, n in (("train", 3), ("validation", 1), ("test", 2)):
        table = pa.table({
            "image": [{"bytes": files.image_bytes("PNG" if k % 2 else "JPEG", value=k), "path": None} for k in range(n)],
            "image_id": [f"ROCO_{split}_{k}" for k in range(n)],
            "caption": [f"{split} caption {k}" for k in range(n)],
        })
        pq.write_table(table, data / f"{split}-00000-of-00001.parquet")
    with pytest.raises(DatasetLayoutError, match="extract_dir"):
        import_dataset("roco", tmp_path / "roco")
    out = tmp_path / "extracted"
    imported = import_dataset("roco", tmp_path / "roco", {"extract_dir": str(out)})
    files.check(imported, tmp_path)
    assert imported.root == out
    assert imported.records["split"].value_counts().to_dict() == {"train": 3, "test": 2, "val": 1}
    records = imported.records.set_index("id")
    assert records.loc["ROCO_train_1", "image"] == "train/ROCO_train_1.png"
    assert records.loc["ROCO_train_0", "image"] == "train/ROCO_train_0.jpg"
    assert (out / "val/ROCO_validation_0.jpg").is_file()


def test_pmc_oa_groups_by_article(tmp_path: Path, files) -> None:
    splits = {"train.jsonl": ["PMC1_Fig1_a.jpg", "PMC1_Fig2.jpg"], "valid.jsonl": ["PMC2_Fig1.jpg"],
              "test.jsonl": ["PMC3_Fig1.jpg"]}
    for name, images in splits.items():
        (tmp_path / name).write_text("".join(json.dumps({"image": i, "caption": f"caption of {i}"}) + "\n" for i in images))
        for i in images:
            files.image(tmp_path / "images" / i)
    imported = import_dataset("pmc_oa", tmp_path, {"image_dir": "images"})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["images/PMC1_Fig1_a", "group"] == records.loc["images/PMC1_Fig2", "group"] == "PMC1"
    assert records.loc["images/PMC2_Fig1", "split"] == "val"
    # the same article in two split files is leakage and is refused
    (tmp_path / "test.jsonl").write_text(json.dumps({"image": "PMC1_Fig9.jpg", "caption": "x"}) + "\n")
    files.image(tmp_path / "images/PMC1_Fig9.jpg")
    with pytest.raises(DatasetFormatError, match="more than one split"):
        import_dataset("pmc_oa", tmp_path, {"image_dir": "images"})


def test_quilt_merges_captions_and_fills_splits(tmp_path: Path, files) -> None:
    rows = [("v1_a.jpg", "tumour cells", "train", "v1"), ("v1_a.jpg", "second caption", "train", "v1"),
            ("v1_b.jpg", "more tumour", "", "v1"), ("v2_a.jpg", "normal tissue", "", "v2"),
            ("v3_a.jpg", "   ", "test", "v3")]
    pd.DataFrame(rows, columns=["image_path", "caption", "split", "video_id"]).to_csv(tmp_path / "quilt_1M_lookup.csv", index=False)
    for image, *_ in rows:
        files.image(tmp_path / "quilt_1m" / image)
    with pytest.raises(DatasetFormatError, match="empty caption"):
        import_dataset("quilt", tmp_path, {"group_column": "video_id"})
    imported = import_dataset("quilt", tmp_path, {"group_column": "video_id", "on_bad_sample": "skip"})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["quilt_1m/v1_a", "texts"] == ["tumour cells", "second caption"]
    assert records.loc["quilt_1m/v1_b", "split"] == "train"  # the video's known split
    assert imported.info["skipped"]["counts"] == {"empty caption": 1}


def test_quilt_groups_frames_of_a_video_by_name(tmp_path: Path, files) -> None:
    rows = [("vidA_image_1.jpg", "c1", "train"), ("vidA_image_2.jpg", "c2", ""), ("vidB_image_1.jpg", "c3", ""),
            ("other.jpg", "c4", "test")]
    pd.DataFrame(rows, columns=["image_path", "caption", "split"]).to_csv(tmp_path / "quilt_1M_lookup.csv", index=False)
    for image, *_ in rows:
        files.image(tmp_path / "quilt_1m" / image)
    imported = import_dataset("quilt", tmp_path)
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["quilt_1m/vidA_image_2", "group"] == "vidA"
    assert records.loc["quilt_1m/vidA_image_2", "split"] == "train"  # inherits the video's split
    assert records.loc["quilt_1m/other", "group"] == "other"
    assert any("matched neither" in n for n in imported.info["notes"])


def test_roco_images_named_by_current_fetch_script(tmp_path: Path, files) -> None:
    """The current scripts/fetch.py writes images/ROCO_nnnnn.jpg; older ones <PMC id>_<name>."""
    _roco_folder(tmp_path, files)
    for image in sorted(tmp_path.glob("data/*/radiology/images/*.jpg")):
        image.unlink()
    for split, ids in (("train", ["ROCO_00001", "ROCO_00002"]), ("validation", ["ROCO_00003"]), ("test", ["ROCO_00004"])):
        for i in ids:
            files.image(tmp_path / "data" / split / "radiology" / "images" / f"{i}.jpg")
    imported = import_dataset("roco", tmp_path)
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert len(records) == 4
    assert records.loc["ROCO_00003", "image"] == "data/validation/radiology/images/ROCO_00003.jpg"
    assert records.loc["ROCO_00001", "group"] == records.loc["ROCO_00002", "group"] == "PMC111"  # still by article
    with pytest.raises(DatasetLayoutError, match="4 of 4 referenced files are missing"):
        import_dataset("roco", tmp_path, {"image_naming": "pmc_name"})


def test_skipping_every_record_is_an_error(tmp_path: Path, files) -> None:
    """on_bad_sample=skip that skips everything must fail (it used to 'succeed' with 0 records)."""
    _roco_folder(tmp_path, files)
    for image in sorted(tmp_path.glob("data/*/radiology/images/*.jpg")):
        image.unlink()
    with pytest.raises(DatasetFormatError, match=r"roco: no record was imported: skipped \{'missing file': 4\}"):
        import_dataset("roco", tmp_path, {"on_bad_sample": "skip"})
