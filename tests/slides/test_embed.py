"""Patch features written as feature bags: correct values, resumable after kill -9, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.data.images import load_feature_bag
from medvl.slides.embed import EmbeddingMismatchError, EmbedOptions, embed_tiles, load_patch_encoder
from medvl.slides.reader import open_slide
from medvl.slides.tiling import TilingSpec, read_tiles, tile_slides
from medvl.utils.errors import UserInputError

pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def tiled(small_slides: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = small_slides
    out = tmp_path_factory.mktemp("tiles")
    tile_slides([root], out, TilingSpec(patch_size=16, region_size=32, mpp=1.0, tissue_threshold=0.3))
    return out


def test_features_equal_the_encoder_on_patches_read_in_a_bare_openslide_loop(tiled: Path, patch_encoder_dir: Path,
                                                                             tmp_path: Path) -> None:
    summary = embed_tiles(tiled, patch_encoder_dir, tmp_path, EmbedOptions(batch_size=7, workers=2))
    assert [s["status"] for s in summary["slides"]] == ["embedded"] * 3
    tiles = read_tiles(tiled / "case1.tiles.parquet")
    bag = load_file(str(tmp_path / "case1.safetensors"))
    assert bag["features"].shape == (tiles.n_regions, 4, 8)  # (M, T = 2×2, d)
    assert torch.equal(bag["coords"], torch.from_numpy(tiles.coords))
    import openslide

    encoder = load_patch_encoder(patch_encoder_dir)
    slide = openslide.OpenSlide(tiles.slide_path)
    level, size = tiles.meta["read_level"], tiles.meta["read_size"]
    patches = [np.asarray(slide.read_region((int(x), int(y)), level, (size, size)).convert("RGB"))
               for x, y in tiles.coords]
    pixels = (torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    expected = encoder.encode_images({"pixel_values": pixels})["image_features"]
    torch.testing.assert_close(bag["features"].reshape(-1, 8), expected, rtol=1e-5, atol=1e-5)
    # the manifest side reads it as a region-token bag
    assert load_feature_bag(tmp_path / "case1.safetensors", layout="regions").shape == (tiles.n_regions, 4, 8)
    inline = embed_tiles(tiled, patch_encoder_dir, tmp_path / "inline", EmbedOptions(batch_size=7, workers=0))
    assert inline["encoded"] == summary["encoded"]  # reading in the encoding thread gives the same bags
    assert torch.equal(load_file(str(tmp_path / "inline" / "case1.safetensors"))["features"], bag["features"])
    with pytest.raises(UserInputError, match=r"workers"):
        EmbedOptions(workers=-1)
    again = embed_tiles(tiled, patch_encoder_dir, tmp_path, EmbedOptions(batch_size=7))
    assert again["encoded"] == 0 and {s["status"] for s in again["slides"]} == {"done before"}
    with pytest.raises(EmbeddingMismatchError, match=r"case0.safetensors was embedded with another"):
        embed_tiles(tiled, patch_encoder_dir, tmp_path, EmbedOptions(image_size=24))


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from medvl.slides.embed import EmbedOptions, embed_tiles

    batches = []

    def on_batch(slide_id, done, total):
        if slide_id == "case1":
            batches.append(done)
            if len(batches) == 2:
                os.kill(os.getpid(), signal.SIGKILL)  # kill -9 in the middle of the second slide

    embed_tiles(sys.argv[1], sys.argv[2], sys.argv[3], EmbedOptions(batch_size=4, workers=2, checkpoint_seconds=0),
                on_batch=on_batch)
""")


def test_embedding_is_resumable_after_kill_9(tiled: Path, patch_encoder_dir: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    embed_tiles(tiled, patch_encoder_dir, reference, EmbedOptions(batch_size=4, workers=2))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tiled), str(patch_encoder_dir), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert (out / "case0.safetensors").is_file() and not (out / "case1.safetensors").exists()
    assert (out / ".case1.partial.json").is_file()
    summary = embed_tiles(tiled, patch_encoder_dir, out, EmbedOptions(batch_size=4, workers=2))
    status = {s["slide_id"]: s for s in summary["slides"]}
    n1 = status["case1"]["n_patches"]
    assert status["case0"]["status"] == "done before" and status["case0"]["encoded"] == 0
    assert status["case1"]["status"] == "resumed" and status["case1"]["encoded"] == n1 - 8
    assert status["case2"]["status"] == "embedded"
    for case in ("case0", "case1", "case2"):
        a, b = load_file(str(out / f"{case}.safetensors")), load_file(str(reference / f"{case}.safetensors"))
        assert torch.equal(a["features"], b["features"]) and torch.equal(a["coords"], b["coords"])
    assert not list(out.glob(".*partial*"))


def test_embed_command_through_openslide(tiled: Path, patch_encoder_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["slides", "embed", str(tiled), "--model", str(patch_encoder_dir),
                                              "--out", str(tmp_path), "--batch-size", "16", "--backend", "openslide"])
    assert result.exit_code == 0, result.output
    assert "3 slides" in result.output and (tmp_path / "embedding.json").is_file()
    with open_slide(read_tiles(tiled / "case0.tiles.parquet").slide_path, backend="openslide") as slide:
        assert slide.backend == "openslide"
    # the tifffile fallback gives the same features
    fallback = tmp_path / "tifffile"
    embed_tiles(tiled, patch_encoder_dir, fallback, EmbedOptions(batch_size=16, backend="tifffile"))
    torch.testing.assert_close(load_file(str(fallback / "case2.safetensors"))["features"],
                               load_file(str(tmp_path / "case2.safetensors"))["features"])
