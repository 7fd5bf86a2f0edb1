"""End to end: a tiny Hugging Face CLIPModel built from a config, saved locally, evaluated through
``medvl evaluate`` on a tiny manifest of PNGs (retrieval, zero-shot, probe), plus the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.data.manifest import Manifest, TaskSpec, write_manifest


@pytest.fixture(scope="module")
def hf_dir(tiny_hf_clip_dir: Path) -> Path:
    """The shared tiny CLIP directory (tests/conftest.py)."""
    return tiny_hf_clip_dir


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    splits = ["train"] * 8 + ["val"] * 4 + ["test"] * 6
    for i, split in enumerate(splits):
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({
            "id": f"r{i}", "image": f"img/{i}.png",
            "texts": [f"finding {i} number {k}" for k in range(1 + i % 2)],
            "labels.findings": [float(i % 2), float(i % 3 == 0)],
            "labels.view": i % 2,
            "group": f"p{i}", "split": split, "fold": -1,
        })
    tasks = [TaskSpec("findings", "multilabel", ("cardiomegaly", "edema"), novel_classes=("edema",)),
             TaskSpec("view", "multiclass", ("ap", "pa"))]
    path = root / "manifest.parquet"
    write_manifest(Manifest(pd.DataFrame(rows), tasks, root=root), path)
    return path


def test_evaluate_hf_model_through_cli(hf_dir: Path, manifest_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--hf-model", str(hf_dir), "--data", str(manifest_path), "--out", str(out),
            "--tasks", "retrieval,classification,zeroshot,probe",
            "--set", "probe.shots=[1,2,all]", "--set", "probe.seeds=[0,1]", "--set", "probe.features=projected",
            "--set", "probe.c_grid=[0.1,1.0,10.0]", "--set", "progress=false",
            "--set", f"cache_dir={tmp_path / 'cache'}"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "| retrieval | i2t/recall@1 |" in result.output
    res = json.loads((out / "results.json").read_text())
    prov = res["provenance"]
    assert prov["model"]["format"] == "hf" and prov["family"] == "clip" and prov["split"] == "test" and len(prov["manifest_hash"]) == 64
    assert prov["n_images"] == 6 and prov["n_captions"] == 9
    m = res["tasks"]["retrieval"]["metrics"]
    assert 0 <= m["i2t/recall@1"] <= m["i2t/recall@5"] <= 1
    assert m["t2i/recall@10"] == 1.0  # gallery of 6 images
    zs = res["tasks"]["zeroshot"]
    assert "findings/all/map_macro" in zs["metrics"] and "findings/novel/map_macro" in zs["metrics"]
    assert zs["options"]["findings"]["prompt_source"] == "synthetic_findings"
    assert "enlarged heart" in zs["options"]["findings"]["prompts"]["cardiomegaly"]
    assert "classification" in res["tasks"] and res["tasks"]["classification"]["info"]["skipped"]
    probe = res["tasks"]["probe"]
    assert probe["summaries"]["view/1shot/accuracy"]["n"] == 2
    assert probe["info"]["tasks"] == ["findings", "view"]  # every eligible task, each named
    assert "findings/1shot/map_macro" in probe["metrics"]
    assert "probed: findings (multilabel), view (multiclass)" in result.output
    csv = pd.read_csv(out / "metrics.csv")
    assert {"task", "metric", "value", "std", "median", "q1", "q3"} <= set(csv.columns)
    assert len(csv) == sum(len(t["metrics"]) for t in res["tasks"].values())
    assert (out / "results.md").read_text().startswith("| task | metric |")
    # second run hits the embedding cache and gives identical numbers
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 3  # test, train, val splits
    result2 = CliRunner().invoke(build_app(), [*args[:6], str(tmp_path / "eval2"), *args[7:]])
    assert result2.exit_code == 0, result2.output
    res2 = json.loads((tmp_path / "eval2" / "results.json").read_text())
    assert res2["tasks"]["retrieval"]["metrics"] == m


def test_cli_errors(hf_dir: Path, manifest_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(build_app(), ["evaluate", "--data", str(manifest_path), "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "exactly one" in r.output
    r = runner.invoke(build_app(), ["evaluate", "--hf-model", str(hf_dir), "--data", str(manifest_path),
                                    "--out", str(tmp_path / "y"), "--set", "retrieval.nope=1"])
    assert r.exit_code == 2 and "retrieval.nope: unknown key" in r.output
