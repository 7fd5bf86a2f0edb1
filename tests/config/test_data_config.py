"""DataConfig schema: defaults, validation errors naming the key, YAML + overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvl.config import ConfigError, load_config
from medvl.config.data import DataConfig, SplitConfig, TrainTransformConfig


def test_defaults() -> None:
    cfg = DataConfig(manifest=Path("m.parquet"))
    assert cfg.on_bad_sample == "error"
    assert cfg.train_transforms.hflip_p == 0.0  # flips swap laterality: off by default
    assert cfg.eval_transforms.crop == "center"
    assert cfg.caption.mode == "random"
    assert cfg.fold is None


def test_yaml_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "data.yaml"
    path.write_text("manifest: data/m.parquet\nimage_size: 64\nchannels: 1\nmean: [0.4]\nstd: [0.2]\n")
    cfg = load_config(path, DataConfig, overrides=["on_bad_sample=skip", "train_transforms.rotation_degrees=0"])
    assert cfg.image_size == 64 and cfg.channels == 1
    assert cfg.on_bad_sample == "skip"
    assert cfg.train_transforms.rotation_degrees == 0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("manifest: m.parquet\non_bad_sample: ignore\n", "on_bad_sample"),
        ("manifest: m.parquet\ntrain_transforms: {flip: 0.5}\n", "train_transforms.flip"),
        ("manifest: m.parquet\nimage_size: -3\n", "image_size"),
        ("manifest: m.parquet\nchannels: 3\nmean: [0.1, 0.2]\n", "mean"),
        ("manifest: m.parquet\nstd: [0.0]\n", "std"),
        ("manifest: m.parquet\ntrain_transforms: {scale: [0.9, 0.5]}\n", "train_transforms.scale"),
        ("image_size: 32\n", "manifest"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, DataConfig)
    message = str(info.value)
    assert str(path) in message
    assert key in message or "mean" in key or "std" in key


def test_split_config_checks() -> None:
    SplitConfig(folds=5, test_fraction=0.2, val_fraction=0.1)
    with pytest.raises(ValueError, match="folds"):
        SplitConfig(folds=1)
    with pytest.raises(ValueError, match="< 1"):
        SplitConfig(test_fraction=0.6, val_fraction=0.5)


def test_train_transform_ranges() -> None:
    with pytest.raises(ValueError):
        TrainTransformConfig(brightness=1.5)
    with pytest.raises(ValueError):
        TrainTransformConfig(hflip_p=2.0)
