"""Quilt-1M: histopathology image–caption pairs mined from educational videos (CSV).

Expected::

    <root>/quilt_1M_lookup.csv   # columns caption, image_path, subset, split, pathology, roi_text,
                                 #   noisy_text, corrected_text, med_umls_ids, magnification, height, width
    <root>/quilt_1m/<image_path>

(the column list as printed by third-party code that reads the release; the file itself could
not be opened here). Several rows may share an image (several captions); they are merged.
Quilt images are frames of videos, and frames of one video are near-duplicates, so the group is
the video: ``group_column`` when the table has a video id column, else the prefix of the image
name matched by ``group_pattern`` (image names look like ``<video id>_image_<uuid>.jpg``), else
the image itself (stated in the import info). Rows without a split value go to a group-hash split.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    assign_missing_splits,
    check_image_files,
    finish_import,
    require_paths,
)
from medvl.data.adapters.image_text import load_caption_files

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/quilt_1M_lookup.csv   (image_path, caption, split, ...)
<root>/quilt_1m/             (images)"""


class Options(CommonOptions):
    """Quilt-1M import options."""

    files: dict[str, str] = Field(default_factory=lambda: {"all": "quilt_1M_lookup.csv"})
    image_column: str = "image_path"
    caption_column: str = "caption"
    split_column: str | None = "split"
    group_column: str | None = None
    """Column with the source video id, if the table has one (see the module docstring)."""
    group_pattern: str | None = r"^(.+?)_image_"
    """Regex on the image file name whose first group is the video id (used without group_column)."""
    image_dir: str = "quilt_1m"


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the Quilt-1M lookup table."""
    require_paths(root, "Quilt-1M", LAYOUT, list(options.files.values()))
    skips = SkipCounter(options.on_bad_sample)
    pattern = re.compile(options.group_pattern) if options.group_pattern and not options.group_column else None

    def video_of(image_path: str) -> str:
        name = Path(image_path).name
        match = pattern.match(name) if pattern is not None else None
        return match.group(1) if match else Path(name).stem

    frame = load_caption_files(root, options.files, image_column=options.image_column,
                               caption_column=options.caption_column, split_column=options.split_column,
                               image_dir=options.image_dir, group_column=options.group_column, source="quilt",
                               skips=skips, group_of=video_of)
    frame = assign_missing_splits(frame, options)
    if options.check_files:  # before the note below, which counts the records that remain
        frame = check_image_files(frame, root, skips)
    notes = []
    if not options.group_column:
        unmatched = int((frame["group"] == frame["image"].map(lambda p: Path(p).stem)).sum())
        if unmatched:
            notes.append(f"{unmatched} images matched neither group_column nor group_pattern: each is its own group")
    return finish_import(frame, {}, root, "quilt", options, skips, notes, check_files=False)


SPEC = AdapterSpec(
    name="quilt",
    summary="Quilt-1M histopathology image–caption pairs (lookup CSV)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import quilt --root /data/quilt --out quilt.parquet --set group_column=video_id",
)
