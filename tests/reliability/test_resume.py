"""What ``medvl train --resume`` trusts: checkpoint files, the data, the logs — each checked, never silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import medvl_in_process, train_one_epoch, write_config


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path]:
    """(config, run dir) of a finished 1-epoch run; tests copy it and resume with more epochs."""
    return train_one_epoch(tmp_path_factory.mktemp("base"), shared_data)


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy, symlinks=True)
    return copy


def _last_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / json.loads((run / "checkpoints" / "last.json").read_text())["dir"]


CORRUPT = ["model.safetensors", "optimizer.safetensors", "rng.rank0.safetensors", "state.json", "last.json"]


@pytest.mark.parametrize("name", CORRUPT)
def test_truncated_checkpoint_file_is_named_and_config_untouched(
        tmp_path: Path, one_epoch_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str], name: str) -> None:
    config, base = one_epoch_run
    run = _copy_run(base, tmp_path)
    victim = run / "checkpoints" / name if name == "last.json" else _last_checkpoint(run) / name
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a write cut short (disk full, kill during a copy)
    before = (run / "config.yaml").read_bytes()
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(run), "--resume", "--set", "training.epochs=2")
    assert code == 2, err
    assert str(victim) in err and "Traceback" not in err
    assert (run / "config.yaml").read_bytes() == before  # a failed --resume rewrote nothing


def _run_on_own_data(base: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the base run whose data is its own copy (so a test may edit it): (config, run, manifest)."""
    saved = yaml.safe_load((base / "config.yaml").read_text())
    original = Path(saved["data"]["manifest"])
    data_dir = tmp_path / "data"
    shutil.copytree(original.parent, data_dir)  # keeps modification times (copy2)
    manifest = data_dir / original.name
    run = _copy_run(base, tmp_path)
    saved["data"]["manifest"] = str(manifest)
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    return write_config(tmp_path / "run.yaml", manifest, epochs=2), run, manifest


def test_resume_refuses_a_manifest_edited_since_the_run_started(
        tmp_path: Path, one_epoch_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Epoch 2 on edited data after epoch 1 on the original would be silently mixed: refused, named."""
    from medvl.data.manifest import read_manifest, write_manifest

    config, run, manifest = _run_on_own_data(one_epoch_run[1], tmp_path)
    m = read_manifest(manifest)
    m.records.at[0, "texts"] = ["an edited report."]
    write_manifest(m, manifest)  # same path, new content
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(run), "--resume")
    assert code == 2, err
    assert "manifest's content changed" in err


def test_resume_refuses_replaced_images(
        tmp_path: Path, one_epoch_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """An image replaced under the same name (same manifest) is noticed (size + modification time)."""
    config, run, manifest = _run_on_own_data(one_epoch_run[1], tmp_path)
    image = manifest.parent / "images" / "0.png"  # a train record's image: same name, new pixels
    Image.fromarray(np.full((16, 16), 255, dtype=np.uint8)).save(image)
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(run), "--resume")
    assert code == 2, err
    assert "image files of the train split changed" in err


def test_resume_accepts_the_same_data_at_a_new_path(
        tmp_path: Path, one_epoch_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The content, not the path, is compared: a moved copy of the data resumes."""
    _, base = one_epoch_run
    saved = yaml.safe_load((base / "config.yaml").read_text())
    original = Path(saved["data"]["manifest"])
    shutil.copytree(original.parent, tmp_path / "moved")  # keeps modification times (copy2)
    moved = write_config(tmp_path / "moved.yaml", tmp_path / "moved" / original.name, epochs=2)
    run = _copy_run(base, tmp_path)
    code, _, err = medvl_in_process(capsys, "train", str(moved), "--out", str(run), "--resume")
    assert code == 0, err
    assert json.loads((run / "training_result.json").read_text())["epochs_completed"] == 2


def test_torn_log_line_is_repaired_and_reported_on_resume(
        tmp_path: Path, one_epoch_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A log line cut short by an interrupted write (older medvl, a kill on NFS) no longer blocks --resume."""
    config, base = one_epoch_run
    run = _copy_run(base, tmp_path)
    steps = run / "logs" / "steps.jsonl"
    with steps.open("a") as handle:
        handle.write('{"epoch": 1, "step": 99, "lr": 0.00')  # torn: no closing brace, no newline
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(run), "--resume", "--set", "training.epochs=2")
    assert code == 0, err
    assert "torn last line" in err and str(steps) in err
    records = [json.loads(line) for line in steps.read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, len(records) + 1))  # contiguous, no duplicate
    result = json.loads((run / "training_result.json").read_text())
    assert any("torn last line" in r for r in result["log_repairs"])
