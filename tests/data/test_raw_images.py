"""Evaluation with raw images: the decoded 8-bit RGB image a published model's own processor gets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.data.images import ImageLoadError, load_image, load_rgb8


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_8bit_files_are_exactly_pil_convert_rgb(mode: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((13, 21, 3)) * 255).astype(np.uint8)).convert(mode)
    path = tmp_path / "x.png"
    img.save(path)
    ours = load_rgb8(path, "image")
    assert ours.mode == "RGB" and ours.size == (21, 13)
    assert np.array_equal(np.asarray(ours), np.asarray(Image.open(path).convert("RGB")))
    # and equal to medvl's float decoding quantised back (the path deeper images take)
    floats = load_image(path, "image", channels=3)
    assert np.array_equal(np.asarray(ours), (floats * 255).round().byte().permute(1, 2, 0).numpy())


def test_16bit_and_arrays_are_quantised_from_the_float_decoding(tmp_path: Path) -> None:
    ramp = (np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 250)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    ours = np.asarray(load_rgb8(path, "image"))
    expected = np.round(ramp / 65535 * 255).astype(np.uint8)
    assert ours.shape == (12, 20, 3) and np.array_equal(ours[..., 0], expected) and np.array_equal(ours[..., 2], expected)
    arr = tmp_path / "a.npy"
    np.save(arr, np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6))
    assert np.asarray(load_rgb8(arr, "array")).shape == (5, 6, 3)
    with pytest.raises(ImageLoadError, match="not found"):
        load_rgb8(tmp_path / "missing.png", "image")
