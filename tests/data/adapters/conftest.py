"""Helpers that write tiny dataset files in their real on-disk formats."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medvl.data.adapters.base import ImportedDataset
from medvl.data.manifest import read_manifest, validate_manifest, write_manifest


class Files:
    """Writers for image/DICOM fixtures and a manifest checker."""

    @staticmethod
    def image(path: Path, fmt: str = "JPEG", size: tuple[int, int] = (8, 8), value: int = 128) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "L" if fmt == "PNG" else "RGB"
        Image.new(mode, size, value).save(path, format=fmt)
        return path

    @staticmethod
    def image_bytes(fmt: str = "PNG", value: int = 10) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", (6, 6), value).save(buffer, format=fmt)
        return buffer.getvalue()

    @staticmethod
    def dicom(path: Path, patient_id: str = "P1", rows: int = 8) -> Path:
        """A minimal valid Secondary Capture DICOM file with 8×8 pixels."""
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

        path.parent.mkdir(parents=True, exist_ok=True)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID = patient_id
        ds.Modality = "CR"
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = np.arange(rows * rows, dtype=np.uint8).tobytes()
        ds.save_as(path, enforce_file_format=True)
        return path

    @staticmethod
    def check(imported: ImportedDataset, tmp_path: Path) -> Any:
        """Validate, check group/split disjointness and Parquet round-trip; returns the re-read manifest."""
        manifest = imported.to_manifest()
        validate_manifest(manifest).raise_if_errors()
        records = manifest.records
        assigned = records[records["split"] != ""]
        assert (assigned.groupby("group")["split"].nunique() <= 1).all(), "a group crosses splits"
        assert records["id"].is_unique
        assert all(isinstance(g, str) for g in records["group"])
        out = tmp_path / "out" / "manifest.parquet"
        write_manifest(manifest, out)
        again = read_manifest(out)
        assert list(again.records["id"]) == list(records["id"])
        assert again.tasks == manifest.tasks
        assert again.root == Path(imported.root).resolve()
        return again


@pytest.fixture
def files() -> Files:
    return Files()
