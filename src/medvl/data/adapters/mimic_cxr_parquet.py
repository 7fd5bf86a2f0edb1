"""MIMIC-CXR as Parquet files with embedded images (the layout the SAS paper's code reads).

The Spectral Alignment Score repository (``medical-vlms-assessment``) reads every ``*.parquet``
in a folder with columns ``image`` (encoded image bytes; also the Hugging Face ``{bytes, path}``
struct), ``findings`` and ``impression``, and uses ``findings + " " + impression`` as the
caption; community copies on the Hugging Face hub (e.g. ``itsanmolgupta/mimic-cxr-dataset``)
have this form. Those copies carry no patient id and usually no split:

* the split comes from the file name (``train-*.parquet``, ``test-*.parquet``, …), else from a
  ``split`` column, else a seeded hash (``val_fraction``/``test_fraction``) — unlike the SAS
  code, which ignores the split and evaluates on every file;
* each image is its own group (**no patient grouping is possible**: the import notes it);
* the record id is an ``id``/``dicom_id``/``image_id`` column when present, else
  ``<file stem>/<row>``.

Images are written to ``extract_dir/<split>/<id>.<ext>`` (the manifest root). ``texts=joined``
(default) gives the SAS caption; ``texts=sections`` one text per non-empty section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    finish_import,
    hash_split,
    require_extract_dir,
    write_image_file,
)
from medvl.data.adapters.image_text import SPLIT_FILE, split_name

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/**/*.parquet     (image: bytes or {bytes, path}; findings; impression; optional id/dicom_id/image_id, split)
                        split from file names train-*/validation-*/test-*, else a split column, else hashed"""
_ID_COLUMNS = ("id", "dicom_id", "image_id")


class Options(CommonOptions):
    """MIMIC-CXR Parquet import options."""

    texts: Literal["joined", "sections"] = "joined"
    extract_dir: str | None = None
    """Where the embedded images are written (the manifest root; the CLI defaults it next to --out)."""


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def load(root: Path, options: Options) -> ImportedDataset:
    """Read every Parquet file under ``root`` and write its images out."""
    import pyarrow.parquet as pq

    files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        raise DatasetLayoutError(f"MIMIC-CXR parquet: no *.parquet files under {root}\nExpected layout:\n{LAYOUT}")
    out_dir = require_extract_dir(options.extract_dir, "MIMIC-CXR parquet")
    skips = SkipCounter(options.on_bad_sample)
    records: list[dict[str, Any]] = []
    hashed = 0
    for path in files:
        parquet = pq.ParquetFile(path)
        columns = set(parquet.schema_arrow.names)
        missing = {"image", "findings", "impression"} - columns
        if missing:
            raise DatasetFormatError(f"{path}: missing column(s) {sorted(missing)}; found {sorted(columns)}")
        id_column = next((c for c in _ID_COLUMNS if c in columns), None)
        match = SPLIT_FILE.match(path.name)
        file_split = split_name(match.group(1), str(path)) if match else None
        wanted = ["image", "findings", "impression", *([id_column] if id_column else []),
                  *(["split"] if "split" in columns and file_split is None else [])]
        row_number = 0
        for batch in parquet.iter_batches(columns=wanted, batch_size=512):
            for row in batch.to_pylist():
                position, row_number = row_number, row_number + 1
                record_id = _text(row.get(id_column)) if id_column else f"{path.stem}/{position}"
                if not record_id:
                    skips.bad("empty id", f"{path.name} row {position}")
                    continue
                findings, impression = _text(row["findings"]), _text(row["impression"])
                if options.texts == "joined":
                    texts = [f"{findings} {impression}".strip()] if findings or impression else []
                else:
                    texts = [t for t in (findings, impression) if t]
                image = row["image"]
                data = image.get("bytes") if isinstance(image, dict) else image
                if not texts:
                    skips.bad("no findings or impression text", record_id)
                    continue
                if not data:
                    skips.bad("no image bytes", record_id)
                    continue
                split = file_split if file_split is not None else split_name(row.get("split"), str(path))
                if not split:  # a pure function of (seed, id): the same whatever the other records
                    split = hash_split([record_id], options.split_seed,
                                       {"val": options.val_fraction, "test": options.test_fraction})[0]
                    hashed += 1
                (out_dir / split).mkdir(parents=True, exist_ok=True)
                try:
                    name = write_image_file(out_dir / split, record_id.replace("/", "__"), bytes(data))
                except DatasetFormatError as exc:
                    skips.bad("image bytes of an unknown format", record_id, str(exc))
                    continue
                records.append({"id": record_id, "image": f"{split}/{name}", "texts": texts, "group": record_id,
                                "split": split})
    frame = pd.DataFrame(records, columns=["id", "image", "texts", "group", "split"])
    notes = ["no patient ids in this layout: one group per image (patient-level leakage cannot be checked)"]
    if hashed:
        notes.append(f"{hashed} records without a split in file name or column: split by a seeded hash of the id")
    return finish_import(frame, {}, out_dir, "mimic_cxr_parquet", options, skips, notes, source="mimic_cxr")


SPEC = AdapterSpec(
    name="mimic_cxr_parquet",
    summary="MIMIC-CXR as Parquet with embedded images + findings/impression (the SAS paper's layout)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import mimic_cxr_parquet --root /data/mimic-cxr-parquet --out mimic_pq.parquet",
    extracts_images=True,
)
