"""Flickr30k: image–caption pairs with the Karpathy split (JSON) or the common CSV.

Two forms are read:

* Karpathy's ``dataset_flickr30k.json``: ``images[] = {filename, split, sentences[{raw, sentid}]}``;
* the CSV ``flickr_annotations_30k.csv`` (the nlphuji/flickr30k form): ``raw`` (a JSON list of
  the captions), ``split`` and ``filename``.

Images live in ``image_dir`` (default ``flickr30k-images``). Flickr30k has no labels and no
groups beyond the image itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pandas as pd

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    DatasetFormatError,
    ImportedDataset,
    SkipCounter,
    find_first,
    finish_import,
    require_paths,
)
from medvl.data.adapters.image_text import caption_records

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/
  flickr30k-images/*.jpg
  dataset_flickr30k.json         (Karpathy split)  or
  flickr_annotations_30k.csv     (columns raw, split, filename)"""


class Options(CommonOptions):
    """Flickr30k import options."""

    format: Literal["auto", "karpathy", "csv"] = "auto"
    karpathy_file: str = "dataset_flickr30k.json"
    csv_file: str = "flickr_annotations_30k.csv"
    image_dir: str = "flickr30k-images"


def load(root: Path, options: Options) -> ImportedDataset:
    """Read Flickr30k captions and splits under ``root``."""
    if options.format == "auto":
        found = find_first(root, [options.karpathy_file, options.csv_file])
        require_paths(root, "Flickr30k", LAYOUT, any_of=[[options.karpathy_file, options.csv_file]])
        assert found is not None
        fmt = "karpathy" if found.name == Path(options.karpathy_file).name else "csv"
    else:
        fmt = options.format
        require_paths(root, "Flickr30k", LAYOUT, [options.karpathy_file if fmt == "karpathy" else options.csv_file])
    skips = SkipCounter(options.on_bad_sample)
    prefix = options.image_dir.rstrip("/") + "/" if options.image_dir else ""
    if fmt == "karpathy":
        path = root / options.karpathy_file
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}: invalid JSON ({exc})") from exc
        rows = [
            {"filename": img["filename"], "split": img["split"],
             "raw": [s["raw"] for s in sorted(img.get("sentences", []), key=lambda s: int(s.get("sentid", 0)))]}
            for img in data.get("images", [])
        ]
        table = pd.DataFrame(rows, columns=["filename", "split", "raw"])
    else:
        table = pd.read_csv(root / options.csv_file, dtype=str, keep_default_na=False)
    frame = caption_records(table, image_column="filename", caption_column="raw", split_column="split",
                            source="flickr30k", skips=skips, image_prefix=prefix,
                            id_of=lambda p: Path(p).stem)
    return finish_import(frame, {}, root, "flickr30k", options, skips, [f"format: {fmt}"])


SPEC = AdapterSpec(
    name="flickr30k",
    summary="Flickr30k captions (Karpathy JSON or the flickr_annotations_30k.csv form)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import flickr30k --root /data/flickr30k --out flickr30k.parquet",
)
