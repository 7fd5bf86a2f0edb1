"""Shared loader for image–caption tables (Flickr30k CSV, ROCO, PMC-OA, Quilt-1M).

:func:`caption_records` turns a table with one row per (image, caption) into records with one
row per image and every caption of that image in ``texts`` (ordered by the table's caption
order, which for these datasets is a stable file order), a group (an article id or video id
where the dataset has one) and a split.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from medvl.data.adapters.base import DatasetFormatError, SkipCounter, normalise_id

__all__ = ["PMC_ARTICLE", "SPLIT_FILE", "caption_records", "read_records_file", "split_name"]

#: PubMed Central article id at the start of an image file name ("PMC4083729_...").
PMC_ARTICLE = re.compile(r"^(PMC\d+)")
#: A Hugging Face style split file name: ``train-00000-of-00001.parquet``, ``test.parquet``, …
SPLIT_FILE = re.compile(r"^(train|training|validation|valid|val|dev|test)[-_.]", re.IGNORECASE)

_SPLIT_ALIASES = {
    "train": "train", "training": "train", "restval": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


def split_name(value: Any, source: str) -> str:
    """Canonical split name (``train``/``val``/``test``) of a dataset's split label ('' if blank)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    key = str(value).strip().lower()
    if not key:
        return ""
    if key not in _SPLIT_ALIASES:
        raise DatasetFormatError(f"{source}: unknown split label {value!r}; expected one of {sorted(_SPLIT_ALIASES)}")
    return _SPLIT_ALIASES[key]


def read_records_file(path: Path) -> pd.DataFrame:
    """Read a CSV/TSV (also gzipped), JSONL or JSON list/dict-of-records file into a DataFrame."""
    name = path.name.lower()
    try:
        if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            return pd.read_json(path, lines=True, dtype=False)
        if name.endswith(".json"):
            with path.open(encoding="utf-8") as handle:
                data = json.load(handle)
            if isinstance(data, dict):
                data = [{"key": k, **v} if isinstance(v, dict) else {"key": k, "value": v} for k, v in data.items()]
            return pd.DataFrame(data)
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (ValueError, json.JSONDecodeError, OSError) as exc:
        raise DatasetFormatError(f"{path}: cannot be read ({exc})") from exc


def caption_records(table: pd.DataFrame, *, image_column: str, caption_column: str, source: str,
                    skips: SkipCounter, split: str | None = None, split_column: str | None = None,
                    group_of: Callable[[str], str] | None = None, image_prefix: str = "",
                    id_of: Callable[[str], str] | None = None) -> pd.DataFrame:
    """Group (image, caption) rows into one record per image.

    Either every row belongs to ``split`` or the split comes from ``split_column``. A caption
    cell holding a JSON list (the Flickr30k CSV's ``raw``) contributes every element. Empty
    captions are bad samples (error or counted skip). ``group_of(image)`` gives the group
    (default: the record id); ``id_of(image)`` the record id (default: the image path
    without extension).
    """
    for column in (image_column, caption_column, *( [split_column] if split_column else [])):
        if column not in table.columns:
            raise DatasetFormatError(f"{source}: missing column {column!r}; found {list(table.columns)}")
    texts: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    for position, (image, caption) in enumerate(zip(table[image_column], table[caption_column], strict=True)):
        image_path = image_prefix + str(image).strip()
        if not str(image).strip():
            skips.bad("empty image reference", f"{source} row {position}")
            continue
        items = _caption_items(caption)
        items = [c for c in items if c]
        if not items:
            skips.bad("empty caption", f"{source} row {position} ({image_path})")
            continue
        texts.setdefault(image_path, []).extend(items)
        row_split = split if split is not None else split_name(table[str(split_column)].iloc[position], source)
        previous = splits.setdefault(image_path, row_split)
        if previous != row_split:
            raise DatasetFormatError(f"{source}: image {image_path} is listed in splits {previous!r} and {row_split!r}")
    records = []
    for image_path, captions in texts.items():
        stem = Path(image_path).with_suffix("").as_posix()
        record_id = id_of(image_path) if id_of else stem
        group = group_of(image_path) if group_of else record_id
        records.append({"id": record_id, "image": image_path, "texts": captions,
                        "group": normalise_id(group), "split": splits[image_path]})
    return pd.DataFrame(records, columns=["id", "image", "texts", "group", "split"])


def _caption_items(cell: Any) -> list[str]:
    if isinstance(cell, (list, tuple)):
        return [str(c).strip() for c in cell]
    if cell is None or (isinstance(cell, float) and cell != cell):
        return []
    text = str(cell).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            return [text]
        if isinstance(values, list):
            return [str(v).strip() for v in values]
    return [text]


def article_group(image_path: str) -> str:
    """The PMC article id of an image file name, else the file stem (one group per image)."""
    name = Path(image_path).name
    match = PMC_ARTICLE.match(name)
    return match.group(1) if match else Path(name).stem


def load_caption_files(root: Path, files: dict[str, str], *, image_column: str, caption_column: str,
                       split_column: str | None, image_dir: str, group_column: str | None, source: str,
                       skips: SkipCounter, group_of: Callable[[str], str] | None = None) -> pd.DataFrame:
    """Records from caption files: ``files`` maps a split (or ``"all"`` with ``split_column``) to a path.

    Rows of one image are merged (its captions in file order); ``group_column`` (a column of
    the file) or ``group_of(image)`` gives the group.
    """
    frames = []
    for split, relative in files.items():
        table = read_records_file(root / relative)
        for column in (image_column, caption_column):
            if column not in table.columns:
                raise DatasetFormatError(f"{root / relative}: missing column {column!r}; found {list(table.columns)}")
        if group_column is not None and group_column not in table.columns:
            raise DatasetFormatError(f"{root / relative}: missing group column {group_column!r}")
        groups = None
        if group_column is not None:
            groups = dict(zip(table[image_column].astype(str).str.strip(), table[group_column], strict=True))
        prefix = image_dir.rstrip("/") + "/" if image_dir else ""
        frame = caption_records(
            table, image_column=image_column, caption_column=caption_column, source=f"{source}:{relative}",
            skips=skips, split=None if split == "all" else split, split_column=split_column if split == "all" else None,
            image_prefix=prefix,
            group_of=(lambda p, g=groups, n=len(prefix): str(g[p[n:]])) if groups is not None else group_of,  # type: ignore[misc]
        )
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "image", "texts", "group", "split"])
    duplicated = frame["image"][frame["image"].duplicated()]
    if len(duplicated):
        raise DatasetFormatError(f"{source}: image(s) listed in more than one split file: {sorted(set(duplicated))[:5]}")
    return frame
