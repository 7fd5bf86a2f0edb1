"""ImageTextDataset, collate and preflight: modes, seeding, batch contract, every bad-input case."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medvl.config.data import DataConfig
from medvl.data.dataset import ImageTextDataset, collate, preflight, select_split
from medvl.data.images import ImageLoadError
from medvl.data.manifest import Manifest, ManifestError, TaskSpec
from medvl.data.transforms import CenterCrop, Compose, Resize

TASKS = [TaskSpec("f", "multilabel", ("a", "b")), TaskSpec("g", "ordinal", ("0", "1", "2"))]


def make_dataset_dir(tmp_path: Path, n: int = 6) -> Manifest:
    (tmp_path / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        Image.fromarray((rng.random((10, 12)) * 255).astype(np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(
            {
                "id": f"r{i}",
                "image": f"img/{i}.png",
                "texts": [f"caption {i}.{k}" for k in range(1 + i % 3)],
                "labels.f": [float(i % 2), float(i % 3 == 0)],
                "text_labels.f": [[float(i % 2), 0.0]] * (1 + i % 3),
                "labels.g": i % 3,
                "group": f"p{i // 2}",
                "split": "train" if i < 4 else "test",
                "fold": i % 2 if i < 4 else -1,
            }
        )
    return Manifest.from_records(rows, TASKS, tmp_path)


TRANSFORM = Compose([Resize(8), CenterCrop(8)])


def test_training_items_and_batch_contract(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    ds = ImageTextDataset(m, train=True, transform=TRANSFORM, seed=1)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["ids"] == [f"r{i}" for i in range(6)]
    assert batch["index"].tolist() == list(range(6))
    assert batch["pixel_values"].shape == (6, 3, 8, 8)
    assert len(batch["texts"]) == 6
    for i, text in enumerate(batch["texts"]):
        assert text in ds.texts_of(i)
    assert batch["labels"]["f"].shape == (6, 2) and batch["labels"]["f"].dtype == torch.float32
    assert batch["labels"]["g"].tolist() == [0, 1, 2, 0, 1, 2]
    assert batch["label_mask"]["f"].dtype == torch.bool and batch["label_mask"]["f"].all()
    assert batch["text_labels"]["f"].shape == (6, 2)
    assert batch["has_text"].all()
    assert batch["skipped"] == []


def test_caption_sampling_seeded_by_seed_epoch_index(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path, n=12)
    a = ImageTextDataset(m, train=True, transform=TRANSFORM, seed=3)
    b = ImageTextDataset(m, train=True, transform=TRANSFORM, seed=3)
    forward = [a[i]["text"] for i in range(12)]
    backward = [b[i]["text"] for i in reversed(range(12))][::-1]
    assert forward == backward  # independent of access order
    torch.testing.assert_close(a[5]["pixel_values"], b[5]["pixel_values"])
    by_epoch = []
    for epoch in range(6):
        a.set_epoch(epoch)
        by_epoch.append(tuple(a[i]["text"] for i in range(12)))
    assert len(set(by_epoch)) > 1
    counts: dict[str, int] = {}
    for epoch in range(60):
        a.set_epoch(epoch)
        counts[a[2]["text"]] = counts.get(a[2]["text"], 0) + 1
    assert set(counts) == set(a.texts_of(2))  # every caption gets drawn


def test_caption_modes(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    first = ImageTextDataset(m, train=True, caption_mode="first", transform=TRANSFORM)
    assert first[2]["text"] == "caption 2.0"
    joined = ImageTextDataset(m, train=True, caption_mode="join", caption_separator=" | ", transform=TRANSFORM)
    assert joined[2]["text"] == "caption 2.0 | caption 2.1 | caption 2.2"


def test_eval_mode_exposes_all_captions(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    ds = ImageTextDataset(m, train=False, transform=TRANSFORM)
    texts, c2i = ds.captions()
    assert len(texts) == 1 + 2 + 3 + 1 + 2 + 3
    assert c2i.tolist() == [0, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5]
    assert texts[3] == "caption 2.0"
    caption_labels = ds.caption_labels("f")
    assert caption_labels is not None and caption_labels.shape == (12, 2)
    batch = collate([ds[1], ds[2]])
    assert batch["texts"] == ["caption 1.0", "caption 1.1", "caption 2.0", "caption 2.1", "caption 2.2"]
    assert batch["caption_to_image"].tolist() == [1, 1, 2, 2, 2]
    # eval images do not depend on the seed or epoch
    ds.set_epoch(7)
    torch.testing.assert_close(ds[1]["pixel_values"], ImageTextDataset(m, train=False, transform=TRANSFORM, seed=9)[1]["pixel_values"])


def test_dataloader_and_from_config(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    cfg = DataConfig(manifest=tmp_path / "m.parquet", image_size=8, channels=1, mean=(0.5,), std=(0.25,))
    ds = ImageTextDataset.from_config(m, cfg, train=True, seed=0)
    loader = DataLoader(ds, batch_size=4, collate_fn=collate, shuffle=False)
    batches = list(loader)
    assert [b["pixel_values"].shape for b in batches] == [(4, 1, 8, 8), (2, 1, 8, 8)]


def test_select_split_and_folds(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    cfg = DataConfig(manifest=tmp_path / "m.parquet")
    assert list(select_split(m, cfg, "train").ids) == ["r0", "r1", "r2", "r3"]
    assert list(select_split(m, cfg, "test").ids) == ["r4", "r5"]
    assert len(select_split(m, cfg, "val")) == 0
    cv = DataConfig(manifest=tmp_path / "m.parquet", fold=1)
    assert list(select_split(m, cv, "val").ids) == ["r1", "r3"]
    assert list(select_split(m, cv, "train").ids) == ["r0", "r2"]
    with pytest.raises(ManifestError, match="fold 4"):
        select_split(m, DataConfig(manifest=tmp_path / "m.parquet", fold=4), "train")


# ------------------------------------------------------------------------------------------- bad input


def _break(m: Manifest, tmp_path: Path, case: str) -> None:
    """Make record r2 bad in the way ``case`` names."""
    if case == "escape":
        m.records.at[2, "image"] = "../outside.png"
    elif case == "missing":
        os.remove(tmp_path / "img" / "2.png")
    elif case == "corrupt":
        (tmp_path / "img" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif case == "empty_text":
        m.records.at[2, "texts"] = ["   "]
    elif case == "no_text":
        m.records.at[2, "texts"] = []
        m.records.at[2, "text_labels.f"] = []
    elif case == "label_range":
        m.records.at[2, "labels.g"] = 7
    elif case == "multilabel_range":
        m.records.at[2, "labels.f"] = [0.0, 3.0]
    else:  # pragma: no cover
        raise AssertionError(case)


SCHEMA_CASES = ["escape", "empty_text", "no_text", "label_range", "multilabel_range"]
FILE_CASES = ["missing", "corrupt"]


@pytest.mark.parametrize("case", SCHEMA_CASES + FILE_CASES)
def test_bad_record_is_an_error_naming_it(tmp_path: Path, case: str) -> None:
    m = make_dataset_dir(tmp_path)
    _break(m, tmp_path, case)
    if case in SCHEMA_CASES:
        with pytest.raises(ManifestError, match="'r2'"):
            ImageTextDataset(m, train=True, transform=TRANSFORM)
        return
    # file problems: caught by the pre-flight …
    with pytest.raises(ManifestError, match=r"'r2'.*2\.png"):
        ImageTextDataset(m, train=True, transform=TRANSFORM, verify_files=True)
    # … or at load time
    ds = ImageTextDataset(m, train=True, transform=TRANSFORM)
    with pytest.raises(ImageLoadError, match=r"'r2'.*2\.png"):
        ds[2]


@pytest.mark.parametrize("case", SCHEMA_CASES + FILE_CASES)
def test_bad_record_is_a_counted_skip(tmp_path: Path, case: str) -> None:
    m = make_dataset_dir(tmp_path)
    _break(m, tmp_path, case)
    ds = ImageTextDataset(m, train=True, transform=TRANSFORM, on_bad_sample="skip", verify_files=True)
    assert len(ds) == 5
    assert ds.ids == ["r0", "r1", "r3", "r4", "r5"]
    assert [(s.id, s.row) for s in ds.skipped] == [("r2", 2)]
    report = ds.skip_report()
    assert report["n_skipped"] == 1
    stage = "preflight" if case in FILE_CASES else "validation"
    assert report["by_stage"] == {stage: 1}
    assert report["records"][0]["reason"]
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["ids"] == ["r0", "r1", "r3", "r4", "r5"]
    assert batch["labels"]["g"].tolist() == [0, 1, 0, 1, 2]


@pytest.mark.parametrize("case", FILE_CASES)
def test_load_time_skip_reported_in_batch(tmp_path: Path, case: str) -> None:
    m = make_dataset_dir(tmp_path)
    _break(m, tmp_path, case)
    ds = ImageTextDataset(m, train=False, transform=TRANSFORM, on_bad_sample="skip")
    assert len(ds) == 6  # not known before loading
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["ids"] == ["r0", "r1", "r3", "r4", "r5"]
    assert batch["index"].tolist() == [0, 1, 3, 4, 5]
    assert [s["id"] for s in batch["skipped"]] == ["r2"]
    assert "2.png" in batch["skipped"][0]["reason"]
    assert ds.skip_report()["by_stage"] == {"load": 1}
    assert 2 not in batch["caption_to_image"].tolist()


def test_texts_optional_for_label_only_datasets(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    _break(m, tmp_path, "no_text")
    ds = ImageTextDataset(m, train=True, transform=TRANSFORM, require_texts=False)
    item = ds[2]
    assert item["text"] == "" and item["text_index"] == -1
    assert not collate([ds[2], ds[3]])["has_text"][0]


def test_manifest_level_errors_cannot_be_skipped(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    m.records = m.records.drop(columns=["labels.g"])
    with pytest.raises(ManifestError, match=r"labels\.g"):
        ImageTextDataset(m, train=True, on_bad_sample="skip")


def test_preflight_reports_symlink_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(outside / "x.png")
    root = tmp_path / "root"
    m = make_dataset_dir(root)
    os.symlink(outside / "x.png", root / "img" / "link.png")
    m.records.at[0, "image"] = "img/link.png"
    problems = preflight(m)
    assert [(p.id, "outside the root" in p.reason) for p in problems] == [("r0", True)]
    assert preflight(m, workers=2) == problems
    with pytest.raises(ManifestError, match="no root"):
        preflight(Manifest(m.records))


# ------------------------------------------------------------------------------------------- feature bags


def test_feature_bags_padded_and_subsampled(tmp_path: Path) -> None:
    (tmp_path / "bags").mkdir()
    rows: list[dict[str, Any]] = []
    for i, n in enumerate([3, 7, 5]):
        np.save(tmp_path / "bags" / f"s{i}.npy", np.full((n, 4), float(i + 1), dtype=np.float32))
        rows.append({"id": f"s{i}", "image": f"bags/s{i}.npy", "image_type": "feature_bag", "texts": ["slide"], "labels.g": i})
    m = Manifest.from_records(rows, [TaskSpec("g", "multiclass", ("x", "y", "z"))], tmp_path)
    ds = ImageTextDataset(m, train=False)
    batch = collate([ds[i] for i in range(3)])
    assert batch["bag"].shape == (3, 7, 4)
    assert batch["bag_mask"].sum(dim=1).tolist() == [3, 7, 5]
    assert float(batch["bag"][0, 3:].abs().sum()) == 0.0
    assert "pixel_values" not in batch
    sub = ImageTextDataset(m, train=True, max_regions=4, seed=0)
    assert sub[1]["bag"].shape == (4, 4)
    assert sub[0]["bag"].shape == (3, 4)


def test_mixed_bags_and_images_rejected(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    m.records.at[0, "image_type"] = "feature_bag"
    with pytest.raises(ManifestError, match="mix"):
        ImageTextDataset(m, train=True)


def test_collate_rejects_unequal_images(tmp_path: Path) -> None:
    m = make_dataset_dir(tmp_path)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "img" / "0.png")
    ds = ImageTextDataset(m, train=False)
    with pytest.raises(ValueError, match="r0"):
        collate([ds[0], ds[1]])
