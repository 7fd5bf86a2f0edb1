"""``medvl evaluate --model DIR --data M --tasks retrieval,zeroshot`` runs offline for every family,
and results.json names the family, its image preprocessing and its tokenizer settings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from _families import write_manifest
from medvl.cli.main import build_app

FAMILIES = {  # fixture name → (family recorded, image preprocessing by, padding rule)
    "clip": ("clip", "CLIPImageProcessor", "longest"),
    "metaclip2": ("metaclip_2", "CLIPImageProcessor", "longest"),
    "siglip": ("siglip", "SiglipImageProcessor", "max_length"),
    "siglip2_fixed": ("siglip", "SiglipImageProcessor", "max_length"),
    "siglip2_naflex": ("siglip2", "Siglip2ImageProcessor", "max_length"),
    "align": ("align", "EfficientNetImageProcessor", "max_length"),
    "open_clip": ("open_clip", "open_clip preprocess", "max_length"),
    "biomedclip": ("open_clip", "open_clip preprocess", "max_length"),
    "timm": ("timm", "timm create_transform", None),
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_evaluate_every_family_from_the_cli(name: str, family_dir: Callable[[str], Path], manifest: Path,
                                            tmp_path: Path) -> None:
    family, by, padding = FAMILIES[name]
    out = tmp_path / "eval"
    result = CliRunner().invoke(build_app(), ["evaluate", "--model", str(family_dir(name)), "--data", str(manifest),
                                              "--tasks", "retrieval,zeroshot", "--out", str(out),
                                              "--set", "progress=false"])
    assert result.exit_code == 0, result.output
    prov = json.loads((out / "results.json").read_text())["provenance"]
    assert prov["family"] == family and prov["trust_remote_code"] is False
    pre = prov["preprocessing"]
    assert pre["image"]["by"].startswith(by)
    tasks = json.loads((out / "results.json").read_text())["tasks"]
    if padding is None:  # image-only backbone: no text side, the text tasks say why they did not run
        assert pre["text"] is None
        assert tasks["retrieval"]["info"]["skipped"]
    else:
        assert pre["text"]["padding"] == padding and pre["text"]["max_length"] > 0 and pre["text"]["tokenizer"]
        assert "i2t/recall@1" in tasks["retrieval"]["metrics"]
        assert any(k.startswith("findings/") for k in tasks["zeroshot"]["metrics"])
