"""Image / DICOM / array / feature-bag loading."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from medvl.data.images import (
    ImageLoadError,
    load_array,
    load_dicom,
    load_feature_bag,
    load_image,
    load_pil,
    load_record,
    to_channels,
    window_linear,
)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    center: float | None = None,
    width: float | None = None,
    photometric: str = "MONOCHROME2",
    signed: bool = False,
) -> Path:
    """A minimal single-frame DICOM written with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if center is not None and width is not None:
        ds.WindowCenter = center
        ds.WindowWidth = width
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_8bit_and_channels(tmp_path: Path) -> None:
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(arr, mode="L").save(tmp_path / "g.png")
    img = load_pil(tmp_path / "g.png")
    assert img.shape == (1, 8, 8) and img.dtype == torch.float32
    np.testing.assert_allclose(img[0].numpy(), arr / 255.0, atol=1e-7)
    rgb = load_image(tmp_path / "g.png", "image", channels=3)
    assert rgb.shape == (3, 8, 8)
    assert torch.equal(rgb[0], rgb[2])


def test_png_16bit_not_quantised(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 1001], [40000, 65535, 257]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    img = load_pil(tmp_path / "d.png")
    np.testing.assert_allclose(img[0].numpy(), arr / 65535.0, rtol=1e-6)
    assert img[0, 0, 1] != img[0, 0, 2]  # 1000 vs 1001 stay distinct (8-bit would merge them)


def test_rgb_jpeg_and_rgba(tmp_path: Path) -> None:
    rgb = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    img = load_image(tmp_path / "c.jpg", "image")
    assert img.shape == (3, 10, 12)
    grey = load_image(tmp_path / "c.jpg", "image", channels=1)
    assert grey.shape == (1, 10, 12)
    Image.fromarray(np.zeros((4, 4, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "a.png")
    assert load_pil(tmp_path / "a.png").shape == (3, 4, 4)


def test_to_channels_luma() -> None:
    x = torch.zeros(3, 2, 2)
    x[1] = 1.0
    np.testing.assert_allclose(to_channels(x, 1).numpy(), np.full((1, 2, 2), 0.587), rtol=1e-6)
    with pytest.raises(ValueError):
        to_channels(torch.zeros(5, 2, 2), 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_image_names_record_and_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as info:
        load_image(path, "image", record_id="rec-7")
    assert "rec-7" in str(info.value) and "bad.png" in str(info.value)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    Image.fromarray((np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="corrupt"):
        load_pil(path, "r1")


def test_missing_file(tmp_path: Path) -> None:
    for kind in ("image", "dicom", "array"):
        with pytest.raises(ImageLoadError, match="not found"):
            load_image(tmp_path / "nope.x", kind, "r")
    with pytest.raises(ImageLoadError, match="not found"):
        load_feature_bag(tmp_path / "nope.pt", "r")
    with pytest.raises(ImageLoadError, match="unknown image type"):
        load_image(tmp_path / "x", "video", "r")


# ------------------------------------------------------------------------------------------- DICOM


def test_window_linear_matches_dicom_standard() -> None:
    # DICOM PS3.3 C.11.2.1.2.1: c=40, w=400 → 0 at/below c-0.5-(w-1)/2 = -160, 1 above c-0.5+(w-1)/2 = 239
    x = np.array([-1000.0, -160.0, 39.5, 239.0, 239.5, 3000.0])
    y = window_linear(x, 40, 400)
    np.testing.assert_allclose(y, [0.0, 0.0, 0.5, 1.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(window_linear(np.array([40.0]), 40, 400, "LINEAR_EXACT"), [0.5])
    np.testing.assert_allclose(window_linear(np.array([40.0]), 40, 400, "SIGMOID"), [0.5])
    with pytest.raises(ValueError):
        window_linear(x, 0, 0.5)


def test_dicom_rescale_and_window(tmp_path: Path) -> None:
    stored = np.array([[0, 1024, 1064], [1264, 1500, 4000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=1.0, intercept=-1024.0, center=40.0, width=400.0)
    img = load_dicom(path)
    hu = stored.astype(np.float64) - 1024.0  # modality LUT: HU = slope * stored + intercept
    expected = np.clip((hu - 39.5) / 399.0 + 0.5, 0, 1)
    assert img.shape == (1, 2, 3)
    np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-6)
    # min–max ignores the window but still applies the rescale (scale-invariant, so check ordering/extremes)
    mm = load_dicom(path, window="minmax")[0].numpy()
    np.testing.assert_allclose(mm, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)


def test_dicom_slope_matters_for_window(tmp_path: Path) -> None:
    stored = np.array([[100, 200], [300, 400]], dtype=np.uint16)
    path = write_dicom(tmp_path / "s.dcm", stored, slope=2.0, intercept=0.0, center=500.0, width=401.0)
    got = load_dicom(path)[0].numpy()
    expected = np.clip((2.0 * stored - 499.5) / 400.0 + 0.5, 0, 1)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    m2 = load_dicom(write_dicom(tmp_path / "m2.dcm", stored))
    m1 = load_dicom(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1.numpy(), 1.0 - m2.numpy(), atol=1e-7)
    assert m2[0, 0, 0] == 0.0 and m2[0, 1, 1] == 1.0


def test_dicom_16bit_precision_kept(tmp_path: Path) -> None:
    stored = np.array([[0, 30000, 30001, 65535]], dtype=np.uint16)
    img = load_dicom(write_dicom(tmp_path / "p.dcm", stored))[0, 0].numpy()
    assert img[1] < img[2]  # one grey level apart survives
    np.testing.assert_allclose(img, stored[0] / 65535.0, atol=1e-6)


def test_pydicom_bundled_ct() -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    img = load_image(path, "dicom", channels=3)
    assert img.shape == (3, 128, 128)
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(img.std()) > 0.01


def test_corrupt_dicom(tmp_path: Path) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"DICM" * 10)
    with pytest.raises(ImageLoadError, match=r"bad\.dcm"):
        load_dicom(path, "rid")


# ------------------------------------------------------------------------------------------- arrays


def test_npy_layouts_and_scaling(tmp_path: Path) -> None:
    np.save(tmp_path / "u16.npy", np.array([[0, 65535]], dtype=np.uint16))
    np.testing.assert_allclose(load_array(tmp_path / "u16.npy")[0].numpy(), [[0, 1]])
    np.save(tmp_path / "f.npy", np.full((4, 5), 0.25, dtype=np.float32))
    assert load_array(tmp_path / "f.npy").shape == (1, 4, 5)
    np.save(tmp_path / "chw.npy", np.zeros((3, 6, 7), dtype=np.float32))
    assert load_array(tmp_path / "chw.npy").shape == (3, 6, 7)
    np.save(tmp_path / "hwc.npy", np.zeros((6, 7, 3), dtype=np.uint8))
    assert load_array(tmp_path / "hwc.npy").shape == (3, 6, 7)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(ImageLoadError, match="not an image"):
        load_array(tmp_path / "bad.npy", "r")
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 0.0]]))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_array(tmp_path / "nan.npy", "r")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ImageLoadError, match=r"obj\.npy"):
        load_array(tmp_path / "obj.npy", "r")


# ------------------------------------------------------------------------------------------- feature bags


def test_feature_bag_formats(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    feats = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    torch.save(torch.from_numpy(feats), tmp_path / "a.pt")
    torch.save({"features": torch.from_numpy(feats), "coords": torch.zeros(5, 2)}, tmp_path / "b.pt")
    np.save(tmp_path / "c.npy", feats)
    with h5py.File(tmp_path / "d.h5", "w") as handle:
        handle["features"] = feats
        handle["coords"] = np.zeros((5, 2))
    save_file({"feats": feats}, str(tmp_path / "e.safetensors"))
    for name in ("a.pt", "b.pt", "c.npy", "d.h5", "e.safetensors"):
        bag = load_record(tmp_path / name, "feature_bag")
        np.testing.assert_allclose(bag.numpy(), feats, err_msg=name)
    assert load_feature_bag(tmp_path / "b.pt", key="coords").shape == (5, 2)
    with pytest.raises(ImageLoadError, match="key 'nope'"):
        load_feature_bag(tmp_path / "b.pt", key="nope")


def test_feature_bag_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_feature_bag(tmp_path / "nan.npy", "slide-1")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.float32))
    with pytest.raises(ImageLoadError, match="empty"):
        load_feature_bag(tmp_path / "empty.npy")
    np.save(tmp_path / "4d.npy", np.zeros((2, 2, 2, 2), dtype=np.float32))
    with pytest.raises(ImageLoadError, match="n_regions"):
        load_feature_bag(tmp_path / "4d.npy")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(ImageLoadError, match="slide-2"):
        load_feature_bag(tmp_path / "junk.pt", "slide-2")


class _NotATensor:
    pass


def test_feature_bag_pt_refuses_pickled_code(tmp_path: Path) -> None:
    torch.save({"features": _NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(ImageLoadError, match=r"evil\.pt"):
        load_feature_bag(tmp_path / "evil.pt")
