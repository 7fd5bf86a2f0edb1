"""Configuration and data errors at the start of a run: exit code 2, the culprit named, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conftest import medvl_in_process, write_config

BAD_STARTS = {
    "missing manifest": (["--set", "data.manifest=/nowhere/manifest.parquet"], "manifest not found: /nowhere"),
    "empty fold": (["--set", "data.fold=7"], "fold 7"),
    "unknown data task": (["--set", "data.tasks=[nope]"], "data.tasks"),
    "unknown objective task": ([], "objective.terms.1.options.task"),
    "seed too large": (["--set", f"seed={2**63}"], "seed"),
}


@pytest.mark.parametrize("case", list(BAD_STARTS), ids=list(BAD_STARTS))
def test_bad_start_exits_2_naming_the_culprit_and_writes_nothing(
        tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    overrides, named = BAD_STARTS[case]
    config = write_config(tmp_path / "run.yaml", shared_data, epochs=1)
    if case == "unknown objective task":  # the BCE term names a task the manifest does not have
        data = yaml.safe_load(config.read_text())
        data["objective"]["terms"][1]["options"]["task"] = "nope"
        config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(out), *overrides)
    assert code == 2, err
    assert err.startswith("error: ") and named in err and "Traceback" not in err
    assert not out.exists()  # nothing written: the corrected command is not blocked


def test_corrected_command_and_resume_both_work_after_a_failed_start(
        tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "run.yaml", shared_data, epochs=1)
    for follow_up in ([], ["--resume"]):
        out = tmp_path / f"run{len(follow_up)}"
        code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(out), "--set", "data.fold=7")
        assert code == 2, err
        code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(out), *follow_up)
        assert code == 0, err
        assert (out / "training_result.json").is_file()


def test_relative_manifest_is_relative_to_the_config_file(
        tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`data.manifest: ../data/manifest.parquet` in configs/run.yaml works from any working directory."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    os.symlink(shared_data.parent, project / "data")
    config = write_config(project / "configs" / "run.yaml", "../data/manifest.parquet", epochs=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = Path.cwd()
    os.chdir(elsewhere)
    try:
        code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(tmp_path / "run"))
    finally:
        os.chdir(cwd)
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert Path(saved["data"]["manifest"]).resolve() == (project / "data" / "manifest.parquet").resolve()
