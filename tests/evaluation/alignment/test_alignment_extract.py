"""A study entry that extracts its embeddings (tiny Hugging Face CLIP built from a config, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from medvl.config import load_config
from medvl.config.alignment import AlignmentStudyConfig
from medvl.data.manifest import Manifest, TaskSpec, write_manifest
from medvl.evaluation.alignment.study import StudyError, run_study


def _manifest(root: Path, seed: int) -> Path:
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(10):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"img/{i}.png", "texts": [f"finding {i}", f"report {i} text"],
                     "labels.view": i % 2, "group": f"p{i}", "split": "test", "fold": -1})
    path = root / "manifest.parquet"
    write_manifest(Manifest(pd.DataFrame(rows), [TaskSpec("view", "multiclass", ("ap", "pa"))], root=root), path)
    return path


def test_study_extracts_embeddings(tmp_path: Path, tiny_hf_clip_dir: Path) -> None:
    _manifest(tmp_path / "a", 0)
    _manifest(tmp_path / "b", 1)
    entries = [{"model": "tiny", "dataset": ds, "domain": dom,
                "extract": {"hf_model": str(tiny_hf_clip_dir), "manifest": f"{ds}/manifest.parquet", "cache_dir": "cache"}}
               for ds, dom in (("a", "natural"), ("b", "medical"))]
    cfg_path = tmp_path / "study.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "out"), "entries": entries, "plots": False,
        "metrics": {"metrics": ["sas", "linear_cka", "delta_cos", "mutual_knn"], "knn_k": 3},
        "correlation": {"bootstrap_resamples": 0},
    }))
    out = run_study(load_config(cfg_path, AlignmentStudyConfig), config_dir=tmp_path)
    res = json.loads((out / "results.json").read_text())
    assert [e["row"]["n_pairs"] for e in res["entries"]] == [10, 10]
    assert res["entries"][0]["row"]["n_captions"] == 20 and res["entries"][0]["row"]["dim"] == 8
    assert res["entries"][0]["source"]["extract"]["hf_model"] == str(tiny_hf_clip_dir)
    assert 0.0 <= res["entries"][0]["row"]["sas_it"] <= 1.0
    assert any((tmp_path / "cache").iterdir())  # extraction cache used
    bad = load_config(cfg_path, AlignmentStudyConfig, [f"output_dir={tmp_path / 'out2'}"])
    bad.entries[0].extract.manifest = "missing/manifest.parquet"  # type: ignore[union-attr]
    with pytest.raises(StudyError, match=r"entry tiny/a: extract\.manifest not found"):
        run_study(bad, config_dir=tmp_path)
    assert not (tmp_path / "out2").exists()  # checked before the output directory is created
