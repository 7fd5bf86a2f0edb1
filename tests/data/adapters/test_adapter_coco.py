"""MS-COCO adapter on tiny instances/captions/Karpathy files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _coco_layout import write_coco
from medvl.data.adapters import DatasetLayoutError, import_dataset
from medvl.data.adapters.base import DatasetFormatError


def _write_coco(root: Path, files, year: int = 2017, shuffle_seed: int | None = None) -> None:
    write_coco(root, files.image, year=year, shuffle_seed=shuffle_seed)


def test_official_split_labels_and_six_captions(tmp_path: Path, files) -> None:
    _write_coco(tmp_path, files)
    imported = import_dataset("coco", tmp_path)
    manifest = files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    # fixed category order: ascending category id (person=1, dog=18, toothbrush=90)
    assert imported.tasks["objects"].classes == ("person", "dog", "toothbrush")
    assert records.loc["1", "labels.objects"] == [1.0, 1.0, 0.0]
    assert records.loc["2", "labels.objects"] == [0.0, 0.0, 1.0]
    assert records.loc["3", "labels.objects"] == [0.0, 0.0, 0.0]
    # six captions stay with image 1; image 2's captions are not shifted
    assert records.loc["1", "texts"] == [f"image one caption {k}" for k in range(6)]
    assert records.loc["2", "texts"] == [f"image two caption {k}" for k in range(5)]
    assert dict(records["split"]) == {"1": "train", "2": "train", "3": "train", "4": "val"}
    assert records.loc["4", "image"] == "val2017/000000000004_d.jpg"
    assert len(manifest) == 4


def test_order_independent(tmp_path: Path, files) -> None:
    _write_coco(tmp_path / "a", files)
    _write_coco(tmp_path / "b", files, shuffle_seed=3)
    a = import_dataset("coco", tmp_path / "a").records
    b = import_dataset("coco", tmp_path / "b").records
    assert a.drop(columns=[]).to_dict("records") == b.to_dict("records")


def test_drop_unlabelled_is_counted(tmp_path: Path, files) -> None:
    _write_coco(tmp_path, files)
    imported = import_dataset("coco", tmp_path, {"drop_unlabelled": True})
    assert "3" not in set(imported.records["id"])
    assert imported.info["skipped"]["filtered"] == {"no instance annotation (drop_unlabelled)": 1}


def test_karpathy_split(tmp_path: Path, files) -> None:
    _write_coco(tmp_path, files, year=2014)
    karpathy = {"images": [
        {"filepath": "train2014", "filename": "000000000001_a.jpg", "cocoid": 1, "split": "train",
         "sentences": [{"raw": f"k{k}", "sentid": 10 + k} for k in range(6)]},
        {"filepath": "train2014", "filename": "000000000002_b.jpg", "cocoid": 2, "split": "restval",
         "sentences": [{"raw": "two", "sentid": 3}]},
        {"filepath": "train2014", "filename": "000000000003_c.jpg", "cocoid": 3, "split": "test",
         "sentences": [{"raw": "three", "sentid": 4}]},
        {"filepath": "val2014", "filename": "000000000004_d.jpg", "cocoid": 4, "split": "val",
         "sentences": [{"raw": "four", "sentid": 5}]},
    ]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    imported = import_dataset("coco", tmp_path, {"year": 2014, "split_source": "karpathy"})
    records = imported.records.set_index("id")
    assert dict(records["split"]) == {"1": "train", "2": "train", "3": "test", "4": "val"}
    assert records.loc["1", "texts"] == [f"k{k}" for k in range(6)]
    assert records.loc["1", "labels.objects"] == [1.0, 1.0, 0.0]
    files.check(imported, tmp_path)


def test_missing_files_are_named(tmp_path: Path, files) -> None:
    with pytest.raises(DatasetLayoutError, match=r"instances_train2017\.json"):
        import_dataset("coco", tmp_path)
    _write_coco(tmp_path, files)
    (tmp_path / "train2017/000000000002_b.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match=r"000000000002_b\.jpg"):
        import_dataset("coco", tmp_path)
    imported = import_dataset("coco", tmp_path, {"on_bad_sample": "skip"})
    assert imported.info["skipped"]["counts"] == {"missing file": 1}
    assert "2" not in set(imported.records["id"])


def test_unknown_option_rejected(tmp_path: Path) -> None:
    from medvl.config import ConfigError

    with pytest.raises(ConfigError, match="yeer"):
        import_dataset("coco", tmp_path, {"yeer": 2014})


def test_unknown_category_in_annotation(tmp_path: Path, files) -> None:
    _write_coco(tmp_path, files)
    path = tmp_path / "annotations/instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 5
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match="unknown category 5"):
        import_dataset("coco", tmp_path)


def test_karpathy_without_official_annotation_files(tmp_path: Path, files) -> None:
    """split_source=karpathy needs only dataset_coco.json (captions, split, paths): no objects task then."""
    karpathy = {"images": [
        {"filepath": "val2014", "filename": "COCO_val2014_000000000042.jpg", "cocoid": 42, "split": "test",
         "sentences": [{"raw": "a dog", "sentid": 2}, {"raw": "a cat", "sentid": 1}]},
        {"filepath": "train2014", "filename": "COCO_train2014_000000000007.jpg", "cocoid": 7, "split": "restval",
         "sentences": [{"raw": "a bus", "sentid": 3}]},
    ]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(karpathy))
    files.image(tmp_path / "val2014/COCO_val2014_000000000042.jpg")
    files.image(tmp_path / "train2014/COCO_train2014_000000000007.jpg")
    imported = import_dataset("coco", tmp_path, {"year": 2014, "split_source": "karpathy"})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks == {} and "labels.objects" not in records.columns
    assert records.loc["42", "texts"] == ["a cat", "a dog"] and records.loc["7", "split"] == "train"
    assert any("without the objects task" in n for n in imported.info["notes"])
    with pytest.raises(DatasetFormatError, match="drop_unlabelled=true needs"):
        import_dataset("coco", tmp_path, {"year": 2014, "split_source": "karpathy", "drop_unlabelled": True})
