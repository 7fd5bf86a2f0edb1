"""``medvl data import`` and ``medvl data shard`` end to end on tiny datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.data.adapters import ADAPTERS
from medvl.data.manifest import read_manifest
from medvl.data.shards import ShardStream


def _run(*args: str):
    return CliRunner().invoke(build_app(), ["data", *args])


def test_import_writes_manifest_and_info(tmp_path: Path, files) -> None:
    for cls in ("COVID", "Normal"):
        for k in range(3):
            files.image(tmp_path / "ds" / cls / "images" / f"{cls}-{k}.png", fmt="PNG")
    out = tmp_path / "out" / "covid.parquet"
    result = _run("import", "covid_qu", "--root", str(tmp_path / "ds"), "--out", str(out),
                  "--set", "variant=radiography", "--set", "test_fraction=0.3")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert len(manifest) == 6 and manifest.root == (tmp_path / "ds").resolve()
    info = json.loads((tmp_path / "out" / "covid.import.json").read_text())
    assert info["adapter"] == "covid_qu" and info["options"]["test_fraction"] == 0.3
    assert info["manifest_hash"] == manifest.hash()
    again = _run("import", "covid_qu", "--root", str(tmp_path / "ds"), "--out", str(out), "--set", "variant=radiography")
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_import_errors_are_clear(tmp_path: Path) -> None:
    unknown = _run("import", "imagenet", "--root", str(tmp_path), "--out", str(tmp_path / "m.parquet"))
    assert unknown.exit_code == 2 and "available: bach, chexpert" in unknown.output
    missing = _run("import", "nih_cxr14", "--root", str(tmp_path), "--out", str(tmp_path / "m.parquet"))
    assert missing.exit_code == 2 and "train_val_list.txt" in missing.output and "Expected layout" in missing.output
    bad_option = _run("import", "coco", "--root", str(tmp_path), "--out", str(tmp_path / "m.parquet"), "--set", "yeer=1")
    assert bad_option.exit_code == 2 and "yeer" in bad_option.output


def test_import_extracting_adapter_then_shard(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (4, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (4, 1)).astype(np.uint8)
    (tmp_path / "mm").mkdir()
    np.savez(tmp_path / "mm" / "pneumoniamnist.npz", **arrays)
    out = tmp_path / "out" / "pneu.parquet"
    result = _run("import", "medmnist", "--root", str(tmp_path / "mm"), "--out", str(out), "--set", "flag=pneumoniamnist")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "pneu_images" / "pneumoniamnist" / "test" / "3.png").is_file()
    manifest = read_manifest(out)
    assert manifest.root == (tmp_path / "out" / "pneu_images").resolve()
    shards = _run("shard", str(out), "--out", str(tmp_path / "shards"), "--shard-size", "5")
    assert shards.exit_code == 0, shards.output
    assert "3 shards with 12 records" in shards.output
    ids = sorted(item["id"] for item in ShardStream(tmp_path / "shards", rank=0, world_size=1))
    assert ids == sorted(manifest.records["id"])


def test_every_adapter_documents_layout_and_command() -> None:
    for name, spec in ADAPTERS.items():
        assert spec.layout.strip() and spec.summary
        assert spec.command.startswith(f"medvl data import {name} --root ")
        assert spec.extracts_images == ("extract_dir" in spec.options.model_fields)


def test_datasets_command_lists_and_describes() -> None:
    listing = _run("datasets")
    assert listing.exit_code == 0 and all(name in listing.output for name in ADAPTERS)
    detail = _run("datasets", "padchest")
    assert detail.exit_code == 0
    assert "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv" in detail.output
    assert "frontal_only = False" in detail.output and ADAPTERS["padchest"].command in detail.output
    assert _run("datasets", "nope").exit_code == 2
