"""Bad records: named in checks, counted exactly once when skipped, never a silent success or reduction."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import medvl_in_process, write_config


def _png(path: Path, width: int, height: int, depth: int, colour: int, pixels: np.ndarray | None = None) -> None:
    """A PNG written byte by byte (so the header can claim anything, e.g. 20000 × 20000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    if pixels is None:
        raw = b"\0" * 64  # a decoder never gets this far
    else:
        rows = pixels.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1)
        raw = b"".join(b"\0" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _corrupt(manifest: Path, *indices: int) -> None:
    for i in indices:
        (manifest.parent / "images" / f"{i}.png").write_bytes(b"not a png")


@pytest.mark.parametrize("workers", [0, 2])
def test_skipped_records_are_counted_once_per_split(tmp_path: Path, tiny_data: Path, workers: int,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """One bad train and one bad val image, 2 epochs: 1 + 1 skipped, with or without loader workers."""
    _corrupt(tiny_data, 3, 17)  # records 0-15 are train, 16-19 val
    config = write_config(tmp_path / "run.yaml", tiny_data, epochs=2, num_workers=workers)
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(tmp_path / "run"),
                       "--set", "data.on_bad_sample=skip")
    assert code == 0, err
    result = json.loads((tmp_path / "run" / "training_result.json").read_text())
    assert result["train_skipped"]["n_skipped"] == 1
    assert [r["id"] for r in result["train_skipped"]["records"]] == ["case3"]
    assert result["val_skipped"]["n_skipped"] == 1
    assert [r["id"] for r in result["val_skipped"]["records"]] == ["case17"]


def test_skipping_every_record_is_an_error(tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _corrupt(tiny_data, *range(16))  # every train image
    config = write_config(tmp_path / "run.yaml", tiny_data, epochs=1)
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(tmp_path / "run"), "--set", "data.on_bad_sample=skip")
    assert code == 2, err
    assert "skipped every one of the 16 records of the training split" in err and "case0" in err


def test_decompression_bomb_is_a_named_record_error_or_a_counted_skip(
        tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 20000 × 20000 PNG (Pillow's DecompressionBombError, not an OSError)."""
    _png(tiny_data.parent / "images" / "5.png", 20000, 20000, 8, 0)
    summary = tmp_path / "summary.json"
    code, _, err = medvl_in_process(capsys, "data", "check", str(tiny_data), "--json", str(summary))
    assert code == 1 and "Traceback" not in err  # a problem found, reported
    problems = json.loads(summary.read_text())["files"]["problems"]
    assert [p["id"] for p in problems] == ["case5"] and "too large" in problems[0]["reason"]
    config = write_config(tmp_path / "run.yaml", tiny_data, epochs=1)
    code, _, err = medvl_in_process(capsys, "train", str(config), "--out", str(tmp_path / "run"), "--set", "data.on_bad_sample=skip")
    assert code == 0, err
    skipped = json.loads((tmp_path / "run" / "training_result.json").read_text())["train_skipped"]
    assert skipped["n_skipped"] == 1 and "too large" in skipped["records"][0]["reason"]


@pytest.mark.parametrize(("colour", "channels"), [(2, 3), (6, 4)], ids=["rgb48", "rgba64"])
def test_16_bit_colour_png_keeps_its_depth(tmp_path: Path, colour: int, channels: int) -> None:
    """docs/data.md: 16-bit PNGs are never reduced to 8 bits — colour ones included."""
    from medvl.data.dataset import ImageTextDataset
    from medvl.data.manifest import Manifest

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, (4, 5, channels), dtype=np.uint16)
    _png(tmp_path / "deep.png", 5, 4, 16, colour, pixels)
    m = Manifest.from_records([{"id": "r0", "image": "deep.png", "texts": ["x."]}], root=tmp_path)
    item = ImageTextDataset(m, train=False)[0]
    assert isinstance(item, dict)
    got = item["pixel_values"].numpy()
    expected = pixels[:, :, :3].transpose(2, 0, 1) / 65535.0
    np.testing.assert_allclose(got, expected, atol=1e-7)  # every one of the 65536 levels survives
