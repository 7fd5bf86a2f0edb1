"""Starting a run from another run's weights (``training.init_weights``): tower assets travel with them.

A text tower whose tokenizer the parent run did not have (an image-only classifier, then CLIP on top)
gets its tokenizer trained on this run's corpus; a parent that has one passes it on unchanged, so
the inherited text-tower weights keep reading the same token ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.training._training_data import run_config_dict, write_tiny_dataset

from medvl.config.loading import config_from_dict
from medvl.config.training import RunConfig
from medvl.data.manifest import read_manifest, write_manifest
from medvl.training.logging import read_jsonl
from medvl.training.run import run_training


def _config(manifest: Path, *, image_only: bool = False, init: Path | None = None) -> RunConfig:
    raw = run_config_dict(manifest, epochs=1, batch_size=8, validate_at_start=False)
    if image_only:
        raw["model"]["text"] = None  # type: ignore[index]
        raw["objective"] = {"terms": [{"name": "bce", "kind": "bce", "options": {"task": "findings"}}]}
    if init is not None:
        raw["training"].update(init_weights=str(init), init_allow_missing=True)  # type: ignore[attr-defined]
    return config_from_dict(raw, RunConfig, source="test")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("init"), n=16)


def test_text_tower_added_to_an_image_only_run_gets_its_tokenizer_trained(
    manifest: Path, tmp_path: Path
) -> None:
    run_training(_config(manifest, image_only=True), tmp_path / "classifier")
    assert not (tmp_path / "classifier" / "model" / "text").exists()

    run_training(_config(manifest, init=tmp_path / "classifier"), tmp_path / "clip")
    assert (tmp_path / "clip" / "model" / "text" / "tokenizer.json").is_file()
    steps = read_jsonl(tmp_path / "clip" / "logs" / "steps.jsonl")
    assert steps and all(record["train/clip"] > 0 for record in steps)


def test_parent_tokenizer_is_reused_not_retrained(manifest: Path, tmp_path: Path) -> None:
    run_training(_config(manifest), tmp_path / "parent")
    parent_tokenizer = (tmp_path / "parent" / "model" / "text" / "tokenizer.json").read_bytes()
    # the child's reports use other words, so a tokenizer retrained on them would differ from the parent's
    child = read_manifest(write_tiny_dataset(tmp_path / "child-data", n=16))
    child.records["texts"] = [[f"zebra quokka {text}" for text in texts] for texts in child.records["texts"]]
    child_manifest = write_manifest(child, tmp_path / "child-data" / "manifest.parquet")
    run_training(_config(child_manifest, init=tmp_path / "parent"), tmp_path / "child")
    assert (tmp_path / "child" / "model" / "text" / "tokenizer.json").read_bytes() == parent_tokenizer
