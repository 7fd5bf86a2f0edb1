"""PathVQA (He et al. 2020): 32,799 questions about 4,998 pathology images, official splits.

Two public forms are read::

    original release:
      <root>/qas/{train,val,test}/{train,val,test}_qa.pkl   (list of {image, question, answer, ...})
      <root>/images/{train,val,test}/<image>.jpg
    parquet (the Hugging Face copy):
      <root>/**/{train,validation,test}-*.parquet          (image {bytes, path}, question, answer)

The pickles are read with an unpickler that refuses every class (only lists, dicts, strings and
numbers load), so no code from the dataset files runs. Parquet images are written once per
distinct image (named by content hash) to ``extract_dir``, which becomes the manifest root.
``answer_type``: yes/no answers are closed, the rest open; ``question_type`` is the paper's
answer category (``yes/no``, ``number``, ``other``). ``group`` is the image within its official split.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from pathlib import Path
from typing import Any, Literal

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    DatasetLayoutError,
    ImportedDataset,
    SkipCounter,
    finish_import,
    require_extract_dir,
    write_image_file,
)
from medvl.data.adapters.image_text import split_name
from medvl.data.adapters.vqa_records import answer_kind, answer_type_of, vqa_frame, vqa_record

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
original: <root>/qas/{train,val,test}/{train,val,test}_qa.pkl  and  <root>/images/{train,val,test}/<image>.jpg
parquet:  <root>/**/{train,validation,test}-*.parquet  (image {bytes, path}, question, answer)"""
_SPLITS = ("train", "val", "test")
_PARQUET_SPLIT = re.compile(r"^(train|validation|valid|val|test)[-_.]", re.IGNORECASE)


class Options(CommonOptions):
    """PathVQA import options."""

    format: Literal["auto", "pickle", "parquet"] = "auto"
    extract_dir: str | None = None
    """Where the parquet form's embedded images are written (the manifest root)."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise DatasetFormatError(f"refusing to load {module}.{name} from a PathVQA pickle (only plain data loads)")


def _read_pickle(path: Path) -> list[dict[str, Any]]:
    try:
        items = _DataOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError) as exc:
        raise DatasetFormatError(f"{path}: not a readable pickle ({exc})") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise DatasetFormatError(f"{path}: expected a list of {{image, question, answer}} dicts")
    return items


def _record(rid: str, image: str, group: str, item: dict[str, Any], split: str, skips: SkipCounter) -> dict[str, Any] | None:
    answer = str(item.get("answer", "")).strip()
    return vqa_record(rid, image, item.get("question"), answer, answer_type_of(answer), answer_kind(answer), group,
                      split, skips)


def _load_pickle(root: Path, skips: SkipCounter) -> list[dict[str, Any]]:
    files = {s: root / "qas" / s / f"{s}_qa.pkl" for s in _SPLITS}
    missing = [f"qas/{s}/{s}_qa.pkl" for s, p in files.items() if not p.is_file()]
    missing += [f"images/{s}" for s in _SPLITS if not (root / "images" / s).is_dir()]
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise DatasetLayoutError(f"PathVQA: missing under {root}:\n{lines}\nExpected layout:\n{LAYOUT}")
    records = []
    for split, path in files.items():
        for number, item in enumerate(_read_pickle(path)):
            if "image" not in item:
                raise DatasetFormatError(f"{path}: item #{number} has no 'image'")
            image = str(item["image"]).strip()
            rec = _record(f"pathvqa-{split}-{number:06d}", f"images/{split}/{image}.jpg", image, item, split, skips)
            if rec is not None:
                records.append(rec)
    return records


def _load_parquet(files: list[Path], out_dir: Path, skips: SkipCounter) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    records = []
    for path in files:
        match = _PARQUET_SPLIT.match(path.name)
        assert match is not None
        split = split_name(match.group(1), str(path))
        parquet = pq.ParquetFile(path)
        missing = {"image", "question", "answer"} - set(parquet.schema_arrow.names)
        if missing:
            raise DatasetFormatError(f"{path}: missing column(s) {sorted(missing)}; found {parquet.schema_arrow.names}")
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        number = 0
        for batch in parquet.iter_batches(columns=["image", "question", "answer"], batch_size=512):
            for row in batch.to_pylist():
                rid = f"pathvqa-{split}-{path.stem}-{number:06d}"
                number += 1
                image = row["image"]
                data = image.get("bytes") if isinstance(image, dict) else image
                if not data:
                    skips.bad("no image bytes", rid)
                    continue
                stem = hashlib.sha1(bytes(data)).hexdigest()[:16]
                name = write_image_file(out_dir / split, stem, bytes(data))
                rec = _record(rid, f"{split}/{name}", f"{split}/{stem}", row, split, skips)
                if rec is not None:
                    records.append(rec)
    return records


def load(root: Path, options: Options) -> ImportedDataset:
    """Read PathVQA in either form."""
    if not root.is_dir():
        raise DatasetLayoutError(f"PathVQA: root {root} is not a directory.\nExpected layout:\n{LAYOUT}")
    skips = SkipCounter(options.on_bad_sample)
    parquet_files = sorted(p for p in root.rglob("*.parquet") if _PARQUET_SPLIT.match(p.name))
    fmt = options.format
    if fmt == "auto":
        fmt = "parquet" if parquet_files and not (root / "qas").is_dir() else "pickle"
    if fmt == "parquet":
        if not parquet_files:
            raise DatasetLayoutError(f"PathVQA: no {{train,validation,test}}-*.parquet under {root}\n"
                                     f"Expected layout:\n{LAYOUT}")
        out_dir = require_extract_dir(options.extract_dir, "PathVQA")
        frame = vqa_frame(_load_parquet(parquet_files, out_dir, skips))
        return finish_import(frame, {}, out_dir, "path_vqa", options, skips)
    frame = vqa_frame(_load_pickle(root, skips))
    return finish_import(frame, {}, root, "path_vqa", options, skips)


SPEC = AdapterSpec(
    name="path_vqa",
    summary="PathVQA pathology VQA (original pickles + images, or the parquet copy), one record per question",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import path_vqa --root /data/pvqa --out path_vqa.parquet",
    extracts_images=True,
)
