"""SimCLR's second view: made only when asked, independent of the first, reproducible per (seed, epoch, index)."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.training._training_data import write_tiny_dataset

from medvl.config.data import DataConfig
from medvl.data.dataset import ImageTextDataset, collate
from medvl.data.manifest import read_manifest


def _data_cfg(manifest: Path, **extra: object) -> DataConfig:
    return DataConfig.model_validate({
        "manifest": str(manifest), "image_size": 16, "channels": 1,
        "train_transforms": {"crop": "random_resized", "scale": [0.5, 1.0], "rotation_degrees": 10.0},
        **extra,
    })


def _dataset(tmp_path: Path, second_view: bool, seed: int = 0, **extra: object) -> ImageTextDataset:
    manifest = write_tiny_dataset(tmp_path, n=12) if not (tmp_path / "manifest.parquet").exists() \
        else tmp_path / "manifest.parquet"
    cfg = _data_cfg(manifest, **extra)
    return ImageTextDataset.from_config(read_manifest(manifest), cfg, train=True, seed=seed, second_view=second_view)


def test_views_differ_and_are_reproducible(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, second_view=True)
    item = ds[3]
    assert item["pixel_values_view2"].shape == item["pixel_values"].shape
    assert not torch.equal(item["pixel_values"], item["pixel_values_view2"])
    again = _dataset(tmp_path, second_view=True)[3]
    assert torch.equal(item["pixel_values"], again["pixel_values"])
    assert torch.equal(item["pixel_values_view2"], again["pixel_values_view2"])
    ds.set_epoch(1)
    next_epoch = ds[3]
    assert not torch.equal(item["pixel_values_view2"], next_epoch["pixel_values_view2"])
    other_seed = _dataset(tmp_path, second_view=True, seed=1)[3]
    assert not torch.equal(item["pixel_values_view2"], other_seed["pixel_values_view2"])


def test_first_view_unchanged_and_nothing_extra_without_request(tmp_path: Path) -> None:
    with_view = _dataset(tmp_path, second_view=True)[5]
    plain = _dataset(tmp_path, second_view=False)[5]
    assert "pixel_values_view2" not in plain
    assert torch.equal(plain["pixel_values"], with_view["pixel_values"])  # view 1 keeps its stream
    batch = collate([_dataset(tmp_path, second_view=False)[i] for i in range(4)])
    assert "pixel_values_view2" not in batch


def test_view2_augmentation_from_config(tmp_path: Path) -> None:
    # a deterministic view-2 pipeline (centre crop, no jitter) equals the evaluation view
    ds = _dataset(tmp_path, second_view=True, view2_transforms={
        "crop": "center", "rotation_degrees": 0.0, "brightness": 0.0, "contrast": 0.0})
    a, b = ds[2]["pixel_values_view2"], ds[4]["pixel_values_view2"]
    ds.set_epoch(7)
    assert torch.equal(a, ds[2]["pixel_values_view2"])
    batch = collate([ds[i] for i in range(4)])
    assert batch["pixel_values_view2"].shape == batch["pixel_values"].shape == (4, 1, 16, 16)
    assert not torch.equal(a, b)
