"""The written dataset: byte-identical for a seed, independent of workers and n, a valid manifest,
grouped splits, overwrite protection, and the CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medvl.data.manifest import read_manifest, validate_manifest
from medvl.data.splits import find_group_leakage
from medvl.data.synthetic import (
    BASE_FINDINGS,
    FINDINGS,
    NOVEL_FINDINGS,
    SEVERITY_GRADES,
    SynthConfig,
    build_records,
    encode_png,
    generate_dataset,
    plan_records,
    render_case,
    sample_case,
)
from medvl.utils.rundir import RunDirExistsError


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "synth_summary.json"}


def _config(**kw: object) -> SynthConfig:
    base: dict[str, object] = {"n": 14, "seed": 4, "size": 64, "n_folds": 2, "test_fraction": 0.25}
    base.update(kw)
    return SynthConfig(**base)  # type: ignore[arg-type]


def test_same_seed_gives_byte_identical_dataset(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", _config())
    generate_dataset(tmp_path / "b", _config())
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 14 + 1 and a == b  # every PNG and the manifest, byte for byte
    generate_dataset(tmp_path / "c", _config(seed=5))
    c = _files(tmp_path / "c")
    differing = [k for k in a if k.endswith(".png") and k in c and a[k] != c[k]]
    assert len(differing) >= 10
    assert a["manifest.parquet"] != c["manifest.parquet"]


def test_records_do_not_depend_on_workers_or_n(tmp_path: Path) -> None:
    one = build_records(_config(n=24, workers=1))
    two = build_records(_config(n=24, workers=2))
    assert one.equals(two)
    prefix = build_records(_config(n=9))
    assert prefix.equals(one.iloc[:9].reset_index(drop=True))
    assert plan_records(9, 4) == plan_records(24, 4)[:9]
    # the pixels are a function of (seed, patient, visit) only
    p, v = plan_records(24, 4)[20]
    assert np.array_equal(render_case(sample_case(4, p, v), 64), render_case(sample_case(4, p, v), 64))


def test_manifest_is_valid_and_complete(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = generate_dataset(out, _config(n=30, n_folds=3))
    manifest = read_manifest(out / "manifest.parquet")
    report = validate_manifest(manifest, require_texts=True, require_labels=("findings", "severity"))
    assert report.ok, report
    assert len(manifest) == 30 and manifest.root is not None
    findings = manifest.task("findings")
    assert findings.kind == "multilabel" and findings.classes == FINDINGS
    assert findings.base == BASE_FINDINGS and findings.novel_classes == NOVEL_FINDINGS
    severity = manifest.task("severity")
    assert severity.kind == "ordinal" and severity.classes == SEVERITY_GRADES
    df = manifest.records
    # one caption per report sentence, with per-sentence labels aligned to them
    for texts, text_labels, full in zip(df["texts"], df["text_labels.findings"], df["report"], strict=True):
        assert len(texts) == len(text_labels) >= 2
        assert all(len(row) == len(FINDINGS) for row in text_labels)
        assert all(t in full for t in texts)
    # grouped splits: no patient in two splits or folds; test and folds assigned
    assert find_group_leakage(manifest).ok
    assert set(df["split"]) == {"train", "test"}
    assert set(df.loc[df["split"] == "train", "fold"]) == {0, 1, 2}
    assert df["group"].nunique() < len(df)  # several images per patient
    # images: 8-bit grayscale PNGs of the configured size
    for rel in df["image"].iloc[:5]:
        with Image.open(out / rel) as im:
            assert im.mode == "L" and im.size == (64, 64)
    saved = json.loads((out / "synth_summary.json").read_text())
    assert saved["n_images"] == 30 and saved["config"]["seed"] == 4 and "medvl_version" in saved
    assert saved["manifest_hash"] == manifest.hash() == summary["manifest_hash"]


def test_existing_output_is_not_overwritten_without_asking(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate_dataset(out, _config(n=3, n_folds=0, test_fraction=0.0))
    with pytest.raises(RunDirExistsError):
        generate_dataset(out, _config(n=3, n_folds=0, test_fraction=0.0))
    generate_dataset(out, _config(n=5, n_folds=0, test_fraction=0.0), overwrite=True)
    assert len(list((out / "images").iterdir())) == 5
    assert not (out / ".images.partial").exists()


def test_config_and_encoder_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="size"):
        SynthConfig(size=8)
    with pytest.raises(ValueError, match="extra"):
        SynthConfig(resolution=64)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), dtype=np.float32))


def test_cli_synth_and_gallery(tmp_path: Path) -> None:
    from medvl.cli.main import build_app

    runner = CliRunner()
    app = build_app()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--n", "6", "--size", "48", "--seed", "1",
                                 "--folds", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert "wrote 6 images" in result.output and "pleural_effusion" in result.output
    assert (out / "manifest.parquet").exists()
    again = runner.invoke(app, ["data", "synth", "--out", str(out), "--n", "6", "--size", "48"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "x"), "--n", "0"])
    assert bad.exit_code != 0

    gallery = tmp_path / "gallery.png"
    result = runner.invoke(app, ["data", "gallery", "--out", str(gallery), "--size", "64"])
    assert result.exit_code == 0, result.output
    with Image.open(gallery) as im:
        assert im.size[0] > 500 and im.size[1] > 500
