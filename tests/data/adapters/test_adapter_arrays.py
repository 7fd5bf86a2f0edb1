"""MedMNIST+ (.npz), PatchCamelyon (.h5) and slide feature-bag adapters."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medvl.data.adapters import DatasetFormatError, DatasetLayoutError, import_dataset


def _npz(path: Path, size: int, channels: int, label_width: int, n: int = 3, n_classes: int = 2) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        shape = (n, size, size) if channels == 1 else (n, size, size, channels)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, (n, label_width)).astype(np.uint8)
    np.savez(path, **arrays)


def test_medmnist_writes_lossless_pngs(tmp_path: Path, files) -> None:
    _npz(tmp_path / "pathmnist_64.npz", 64, 3, 1, n_classes=9)
    out = tmp_path / "images"
    imported = import_dataset("medmnist", tmp_path, {"flag": "pathmnist", "size": 64, "extract_dir": str(out)})
    files.check(imported, tmp_path)
    assert imported.tasks["pathmnist"].kind == "multiclass" and len(imported.tasks["pathmnist"].classes) == 9
    records = imported.records.set_index("id")
    assert len(records) == 9
    with np.load(tmp_path / "pathmnist_64.npz") as data:
        expected = data["val_images"][2]
        label = int(data["val_labels"][2, 0])
    row = records.loc["pathmnist_64/val/2"]
    assert row["split"] == "val" and row["labels.pathmnist"] == label
    np.testing.assert_array_equal(np.asarray(Image.open(out / row["image"])), expected)


def test_medmnist_chest_multilabel_and_retina_ordinal(tmp_path: Path, files) -> None:
    _npz(tmp_path / "chestmnist.npz", 28, 1, 14)
    _npz(tmp_path / "retinamnist.npz", 28, 3, 1, n_classes=5)
    chest = import_dataset("medmnist", tmp_path, {"flag": "chestmnist", "extract_dir": str(tmp_path / "o")})
    assert chest.tasks["chestmnist"].kind == "multilabel"
    assert len(chest.records["labels.chestmnist"].iloc[0]) == 14
    retina = import_dataset("medmnist", tmp_path, {"flag": "retinamnist", "extract_dir": str(tmp_path / "o")})
    assert retina.tasks["retinamnist"].kind == "ordinal"
    files.check(retina, tmp_path)
    _npz(tmp_path / "retinamnist_64.npz", 28, 3, 1, n_classes=5)  # wrong image size inside
    with pytest.raises(DatasetFormatError, match=r"expected \(64, 64\)"):
        import_dataset("medmnist", tmp_path, {"flag": "retinamnist", "size": 64, "extract_dir": str(tmp_path / "o")})
    with pytest.raises(DatasetLayoutError, match=r"dermamnist\.npz"):
        import_dataset("medmnist", tmp_path, {"flag": "dermamnist", "extract_dir": str(tmp_path / "o")})


def test_pcam_h5_with_slide_groups(tmp_path: Path, files) -> None:
    rng = np.random.default_rng(1)
    for split, slides in (("train", ["s1", "s1", "s2"]), ("valid", ["s3"]), ("test", ["s4", "s4"])):
        n = len(slides)
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=rng.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8))
        with h5py.File(tmp_path / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=(np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1))
        pd.DataFrame({"coord_y": 0, "coord_x": 0, "tumor_patch": False, "center_tumor_patch": False,
                      "wsi": slides}).to_csv(tmp_path / f"camelyonpatch_level_2_split_{split}_meta.csv")
    imported = import_dataset("pcam", tmp_path, {"extract_dir": str(tmp_path / "patches")})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert records.loc["pcam/train/1", "group"] == "s1" and records.loc["pcam/train/1", "labels.tumor"] == 1
    assert records.loc["pcam/val/0", "split"] == "val"
    # a slide in two splits is leakage: the import refuses it
    pd.DataFrame({"wsi": ["s1"]}).to_csv(tmp_path / "camelyonpatch_level_2_split_valid_meta.csv")
    with pytest.raises(DatasetFormatError, match="more than one split"):
        import_dataset("pcam", tmp_path, {"extract_dir": str(tmp_path / "patches")})


def _slides(root: Path, with_fold_files: bool) -> None:
    (root / "features").mkdir(parents=True)
    reports = {}
    for k, slide in enumerate(["s1", "s2", "s3", "s4", "s5", "s6"]):
        bag = torch.randn(3 + k, 4)
        if k % 3 == 0:
            torch.save(bag, root / "features" / f"{slide}.pt")
        elif k % 3 == 1:
            np.save(root / "features" / f"{slide}.npy", bag.numpy())
        else:
            with h5py.File(root / "features" / f"{slide}.h5", "w") as f:
                f.create_dataset("features", data=bag.numpy())
        reports[slide] = {"label": k % 6, "report": f"Microscopy: gland pattern {k}. Conclusion: grade {k % 6}."}
    (root / "reports.json").write_text(json.dumps(reports))
    if with_fold_files:
        (root / "splits").mkdir()
        (root / "splits/val_fold0.json").write_text(json.dumps({"s1": reports["s1"]}))
        (root / "splits/val_fold1.json").write_text(json.dumps({"s2": reports["s2"], "s3": reports["s3"]}))
        (root / "splits/testset.json").write_text(json.dumps({"s6": reports["s6"]}))


def test_slides_fold_files(tmp_path: Path, files) -> None:
    _slides(tmp_path, with_fold_files=True)
    imported = import_dataset("slides", tmp_path, {"texts": "sentences"})
    files.check(imported, tmp_path)
    records = imported.records.set_index("id")
    assert imported.tasks["grade"].kind == "ordinal" and len(imported.tasks["grade"].classes) == 6
    assert dict(records["fold"]) == {"s1": 0, "s2": 1, "s3": 1, "s4": -1, "s5": -1, "s6": -1}
    assert records.loc["s6", "split"] == "test"
    assert records.loc["s2", "image"] == "features/s2.npy" and records.loc["s2", "image_type"] == "feature_bag"
    assert records.loc["s4", "texts"] == ["Microscopy: gland pattern 3.", "Conclusion: grade 3."]


def test_slides_hash_folds_and_bad_records(tmp_path: Path, files) -> None:
    _slides(tmp_path, with_fold_files=False)
    (tmp_path / "features/s5.npy").unlink()
    with pytest.raises(DatasetFormatError, match="s5: missing feature file"):
        import_dataset("slides", tmp_path)
    imported = import_dataset("slides", tmp_path, {"on_bad_sample": "skip", "n_folds": 2, "test_fraction": 0.3})
    files.check(imported, tmp_path)
    frame = imported.records
    assert "s5" not in set(frame["id"])
    assert set(frame.loc[frame["split"] != "test", "fold"]) <= {0, 1}
    assert (frame.loc[frame["split"] == "test", "fold"] == -1).all()


def test_slides_manifest_feeds_the_bag_dataset(tmp_path: Path) -> None:
    from medvl.data.dataset import ImageTextDataset, collate

    _slides(tmp_path, with_fold_files=True)
    manifest = import_dataset("slides", tmp_path).to_manifest()
    dataset = ImageTextDataset(manifest, train=False, seed=0)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["bag"].shape == (6, 8, 4) and batch["bag_mask"].sum(1).tolist() == [3, 4, 5, 6, 7, 8]
    assert batch["labels"]["grade"].tolist() == [0, 1, 2, 3, 4, 5]
