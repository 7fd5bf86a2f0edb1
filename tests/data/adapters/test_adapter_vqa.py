"""VQA-RAD, SLAKE and PathVQA importers on tiny fixtures in each dataset's public layout."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medvl.data.adapters import DatasetFormatError, DatasetLayoutError, import_dataset
from medvl.evaluation.vqa import VQA_COLUMNS


def _vqa_rad(root: Path, files) -> Path:  # type: ignore[no-untyped-def]
    items = [
        {"qid": 1, "image_name": "synpic100.jpg", "question": "Is there a pneumothorax?", "answer": "No",
         "answer_type": "CLOSED", "question_type": "PRES", "phrase_type": "freeform", "image_organ": "CHEST"},
        {"qid": 2, "image_name": "synpic100.jpg", "question": "What organ is shown?", "answer": "chest",
         "answer_type": "OPEN", "question_type": "ORGAN", "phrase_type": "test_freeform", "image_organ": "CHEST"},
        {"qid": 3, "image_name": "synpic200.jpg", "question": "Is the liver enlarged?", "answer": "yes",
         "answer_type": "CLOSED", "question_type": "SIZE", "phrase_type": "para", "image_organ": "ABD"},
    ]
    (root / "VQA_RAD Dataset Public.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(items))
    for name in ("synpic100.jpg", "synpic200.jpg"):
        files.image(root / "VQA_RAD Image Folder" / name)
    return root


def test_vqa_rad_public_layout(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    imported = import_dataset("vqa_rad", _vqa_rad(tmp_path / "rad", files), {"val_fraction": 0.0})
    df = imported.records.set_index("id")
    assert set(VQA_COLUMNS) <= set(df.columns)
    assert df.loc["vqarad-2", "split"] == "test" and df.loc["vqarad-1", "split"] == "train"
    assert df.loc["vqarad-1", "answer_type"] == "closed" and df.loc["vqarad-2", "answer_type"] == "open"
    assert df.loc["vqarad-2", "question_type"] == "ORGAN"
    assert df.loc["vqarad-1", "image"] == "VQA_RAD Image Folder/synpic100.jpg"
    files.check(imported, tmp_path)


def test_vqa_rad_names_the_missing_file(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    root = _vqa_rad(tmp_path / "rad", files)
    (root / "VQA_RAD Dataset Public.json").unlink()
    with pytest.raises(DatasetLayoutError, match=r"VQA_RAD Dataset Public\.json"):
        import_dataset("vqa_rad", root)


def _slake(root: Path, files) -> Path:  # type: ignore[no-untyped-def]
    def q(qid: int, lang: str, answer: str, atype: str, content: str) -> dict[str, object]:
        return {"img_id": 1, "img_name": "xmlab1/source.jpg", "question": f"question {qid}?", "answer": answer,
                "q_lang": lang, "location": "Lung", "modality": "CT", "answer_type": atype, "base_type": "vqa",
                "content_type": content, "triple": ["vhead", "_", "_"], "qid": qid}

    root.mkdir(parents=True, exist_ok=True)
    (root / "train.json").write_text(json.dumps([q(1, "en", "Yes", "CLOSED", "Abnormality"),
                                                 q(2, "zh", "是", "CLOSED", "Abnormality")]))
    (root / "validate.json").write_text(json.dumps([q(3, "en", "Lung", "OPEN", "Organ")]))
    (root / "test.json").write_text(json.dumps([q(4, "en", "Left", "OPEN", "Position")]))
    files.image(root / "imgs" / "xmlab1" / "source.jpg")
    return root


def test_slake_english_questions_and_official_splits(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    imported = import_dataset("slake", _slake(tmp_path / "Slake1.0", files))
    df = imported.records.set_index("id")
    assert sorted(df.index) == ["slake-1", "slake-3", "slake-4"]  # the Chinese question is filtered out
    assert df.loc["slake-3", "split"] == "val" and df.loc["slake-4", "split"] == "test"
    assert df.loc["slake-4", "question_type"] == "Position" and df.loc["slake-4", "answer_type"] == "open"
    assert df.loc["slake-1", "image"] == "imgs/xmlab1/source.jpg"
    files.check(imported, tmp_path)


def test_slake_names_the_missing_file(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    root = _slake(tmp_path / "Slake1.0", files)
    (root / "validate.json").unlink()
    with pytest.raises(DatasetLayoutError, match=r"validate\.json"):
        import_dataset("slake", root)


def _path_vqa_pickles(root: Path, files) -> Path:  # type: ignore[no-untyped-def]
    for split in ("train", "val", "test"):
        items = [{"image": f"{split}_0000", "question": "Is this necrosis?", "answer": "yes"},
                 {"image": f"{split}_0000", "question": "How many nuclei are there?", "answer": "2"},
                 {"image": f"{split}_0001", "question": "What is present?", "answer": "granuloma"}]
        (root / "qas" / split).mkdir(parents=True, exist_ok=True)
        (root / "qas" / split / f"{split}_qa.pkl").write_bytes(pickle.dumps(items))
        for name in (f"{split}_0000", f"{split}_0001"):
            files.image(root / "images" / split / f"{name}.jpg")
    return root


def test_path_vqa_original_pickles(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    imported = import_dataset("path_vqa", _path_vqa_pickles(tmp_path / "pvqa", files))
    df = imported.records
    assert len(df) == 9 and set(df["split"]) == {"train", "val", "test"}
    kinds = dict(zip(df["answer"], df["question_type"], strict=False))
    assert kinds == {"yes": "yes/no", "2": "number", "granuloma": "other"}
    assert set(df.loc[df["answer"] == "yes", "answer_type"]) == {"closed"}
    files.check(imported, tmp_path)


def test_path_vqa_pickle_with_code_is_refused(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    root = _path_vqa_pickles(tmp_path / "pvqa", files)
    (root / "qas" / "val" / "val_qa.pkl").write_bytes(pickle.dumps([{"image": "x", "question": Path("q"),
                                                                        "answer": "a"}]))
    with pytest.raises(DatasetFormatError, match="refusing"):
        import_dataset("path_vqa", root)


def test_path_vqa_names_the_missing_file(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    root = _path_vqa_pickles(tmp_path / "pvqa", files)
    (root / "qas" / "test" / "test_qa.pkl").unlink()
    with pytest.raises(DatasetLayoutError, match=r"qas/test/test_qa\.pkl"):
        import_dataset("path_vqa", root)


def test_path_vqa_parquet_copy(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "path-vqa" / "data"
    root.mkdir(parents=True)
    img_a, img_b = files.image_bytes("PNG", 10), files.image_bytes("JPEG", 200)
    for split in ("train", "validation", "test"):
        table = pa.table({"image": [{"bytes": img_a, "path": None}, {"bytes": img_a, "path": None},
                                    {"bytes": img_b, "path": None}],
                          "question": ["is it benign?", "what is it?", "how many?"], "answer": ["no", "tumor", "3"]})
        pq.write_table(table, root / f"{split}-00000-of-00001.parquet")
    imported = import_dataset("path_vqa", root.parent, {"extract_dir": str(tmp_path / "images")})
    df = imported.records
    assert len(df) == 9 and df["image"].nunique() == 6  # one file per distinct image per split
    assert set(df["split"]) == {"train", "val", "test"}
    files.check(imported, tmp_path)
