"""`medvl data check | split | leakage` through typer's test runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from medvl.cli.data import register_data
from medvl.cli.main import MedvlGroup
from medvl.data.manifest import Manifest, TaskSpec, read_manifest, write_manifest
from medvl.data.summary import summarize_manifest


@pytest.fixture
def app() -> typer.Typer:
    data_app = typer.Typer(cls=MedvlGroup)  # the root group's handler turns data errors into exit code 2
    register_data(data_app)
    return data_app


def make(tmp_path: Path, ext: str = "parquet") -> Path:
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(24):
        Image.fromarray(np.full((6, 6), i * 10, dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(
            {
                "id": f"r{i}",
                "image": f"img/{i}.png",
                "texts": [f"finding {i}.", "Normal heart."][: 1 + i % 2],
                "labels.f": [float(i % 2), float(i % 4 == 0)],
                "group": f"p{i // 2}",
            }
        )
    m = Manifest.from_records(rows, [TaskSpec("f", "multilabel", ("a", "b"))], tmp_path)
    return write_manifest(m, tmp_path / f"m.{ext}")


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_check_ok(tmp_path: Path, app: typer.Typer, ext: str) -> None:
    path = make(tmp_path, ext)
    result = CliRunner().invoke(app, ["check", str(path), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] and summary["n_records"] == 24 and summary["n_groups"] == 12
    assert summary["tasks"]["f"]["per_class"]["a"] == {"positive": 12, "annotated": 24, "prevalence": 0.5}
    assert summary["texts"]["total_captions"] == 36
    assert summary["tasks"]["f"]["positives_by_split"] == {"(none)": {"a": 12, "b": 6, "n": 24}}
    assert summary["files"] == {"checked": 24, "missing": 0, "unreadable": 0, "problems": []}


def test_check_reports_missing_and_corrupt_files(tmp_path: Path, app: typer.Typer) -> None:
    path = make(tmp_path)
    os.remove(tmp_path / "img" / "3.png")
    (tmp_path / "img" / "5.png").write_bytes(b"broken")
    result = CliRunner().invoke(app, ["check", str(path), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["files"]["missing"] == 1 and summary["files"]["unreadable"] == 1
    assert [p["id"] for p in summary["files"]["problems"]] == ["r3", "r5"]
    flat = "".join(result.output.split())  # rich wraps long paths at the terminal width (80 in CI)
    assert "r3" in flat and "img/3.png" in flat
    assert CliRunner().invoke(app, ["check", str(path), "--no-verify-files"]).exit_code == 0
    CliRunner().invoke(app, ["check", str(path), "--no-decode", "--json", str(tmp_path / "n.json")])
    files = json.loads((tmp_path / "n.json").read_text())["files"]
    assert (files["missing"], files["unreadable"]) == (1, 0)  # the corrupt file is only found by decoding


def test_check_reports_schema_errors(tmp_path: Path, app: typer.Typer) -> None:
    path = make(tmp_path)
    m = read_manifest(path)
    m.records.at[4, "labels.f"] = [1.0, 5.0]
    m.records.at[7, "texts"] = [""]
    write_manifest(m, path)
    result = CliRunner().invoke(app, ["check", str(path), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    errors = json.loads((tmp_path / "s.json").read_text())["validation"]["errors"]
    assert any("'r4'" in e and "labels.f" in e for e in errors)
    assert any("'r7'" in e and "texts" in e for e in errors)


def test_check_unreadable_manifest(tmp_path: Path, app: typer.Typer) -> None:
    result = CliRunner().invoke(app, ["check", str(tmp_path / "none.parquet")])
    assert result.exit_code == 2
    assert "not found" in result.output


def test_split_then_leakage(tmp_path: Path, app: typer.Typer) -> None:
    path = make(tmp_path)
    out = tmp_path / "out" / "split.parquet"
    args = ["split", str(path), "--out", str(out), "--folds", "3", "--test-fraction", "0.25", "--task", "f", "--seed", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    m = read_manifest(out)
    assert m.root == tmp_path.resolve()
    assert set(m.records["split"]) == {"train", "test"}
    assert set(m.records.loc[m.records["split"] == "train", "fold"]) == {0, 1, 2}
    assert CliRunner().invoke(app, ["leakage", str(out)]).exit_code == 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0
    assert read_manifest(out).hash() == m.hash()  # same seed, same assignment


def test_leakage_nonzero_exit(tmp_path: Path, app: typer.Typer) -> None:
    path = make(tmp_path)
    m = read_manifest(path)
    m.records["split"] = ["train", "test"] * 12  # both records of each group in different splits
    write_manifest(m, path)
    result = CliRunner().invoke(app, ["leakage", str(path), "--json", str(tmp_path / "l.json")])
    assert result.exit_code == 1
    assert "p0" in result.output
    assert json.loads((tmp_path / "l.json").read_text())["n_split_leaks"] == 12


def test_summary_without_checks(tmp_path: Path) -> None:
    m = read_manifest(make(tmp_path))
    summary = summarize_manifest(m)
    assert summary["ok"] and "files" not in summary
    assert summary["splits"] == {"(none)": 24}
