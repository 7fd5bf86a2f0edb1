"""The front door recognises checkpoints by their metadata, says what it looked for, inspects them,
and explains a directory it cannot evaluate (a plain ViT)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.models.loading import ModelLoadError, detect_format, inspect_model, load_model

EXPECTED = {"clip": "hf", "siglip2_naflex": "hf", "align": "hf", "open_clip": "open_clip", "timm": "timm"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detected_by_metadata_not_by_name(name: str, family_dir: Callable[[str], Path], tmp_path: Path) -> None:
    import shutil

    renamed = tmp_path / "openai-clip-vit-base-patch32"  # a misleading directory name changes nothing
    shutil.copytree(family_dir(name), renamed)
    assert detect_format(renamed).format == EXPECTED[name]


def test_unknown_format_lists_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match=r"open_clip_config\.json.*config\.json with model_type"):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(tmp_path / "missing")


def test_plain_vit_says_what_is_wrong(family_dir: Callable[[str], Path], tmp_path: Path) -> None:
    vit = family_dir("plain_vit")
    with pytest.raises(ModelLoadError, match=r"ViTModel \(model_type 'vit'\) has no get_image_features") as err:
        load_model(vit)
    assert "sentencepiece" not in str(err.value) and "training tower" in str(err.value)
    result = CliRunner().invoke(build_app(), ["evaluate", "--hf-model", str(vit), "--data", str(tmp_path / "m.parquet"),
                                              "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "not a vision–language model" in result.output


def test_models_inspect_prints_family_towers_and_text_rule(family_dir: Callable[[str], Path]) -> None:
    result = CliRunner().invoke(build_app(), ["models", "inspect", str(family_dir("siglip"))])
    assert result.exit_code == 0, result.output
    for line in ("family: siglip", "vision tower: SiglipVisionModel", "embedding dim: 32",
                 "tokenizer: SiglipTokenizer", "max text length: 64", "padding: max_length, no attention mask",
                 "image preprocessing: by=SiglipImageProcessor"):
        assert line in result.output
    as_json = CliRunner().invoke(build_app(), ["models", "inspect", str(family_dir("timm")), "--json"])
    info = json.loads(as_json.output)
    assert info["family"] == "timm" and info["text_preprocessing"] is None and info["embed_dim"] > 0


def test_inspect_precomputed_embeddings_and_evaluate_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(12, 8)), rng.normal(size=(12, 8))
    npz = tmp_path / "emb.npz"
    np.savez(npz, image=image, text=image + 0.1 * text)
    info = inspect_model(npz)
    assert info.format == "embeddings" and info.embed_dim == 8
    with pytest.raises(ModelLoadError, match="--embeddings"):
        load_model(npz)
    out = tmp_path / "eval"
    result = CliRunner().invoke(build_app(), ["evaluate", "--embeddings", str(npz), "--tasks", "retrieval",
                                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"]["retrieval"]["metrics"]["i2t/recall@1"] > 0.9  # near-identical pairs
    assert res["provenance"]["embeddings_input"] == str(npz)
    bad = tmp_path / "bad.npz"
    np.savez(bad, img=image)
    failed = CliRunner().invoke(build_app(), ["evaluate", "--embeddings", str(bad), "--out", str(tmp_path / "o2")])
    assert failed.exit_code == 2 and "'image' required" in failed.output


def test_align_study_reads_the_npz_that_align_reads(tmp_path: Path) -> None:
    import yaml

    rng = np.random.default_rng(1)
    for name in ("a", "b", "c"):
        image = rng.normal(size=(16, 8))
        np.savez(tmp_path / f"{name}.npz", image=image, text=image + rng.normal(size=(16, 8)))
    single = CliRunner().invoke(build_app(), ["align", str(tmp_path / "a.npz"), "--metrics", "fast",
                                              "--out", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    config = {"entries": [{"model": m, "dataset": "d", "embeddings": f"{m}.npz"} for m in ("a", "b", "c")],
              "metrics": {"metrics": ["fast"]}, "output_dir": str(tmp_path / "study")}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    study = CliRunner().invoke(build_app(), ["align", "study", str(tmp_path / "study.yaml")])
    assert study.exit_code == 0, study.output
