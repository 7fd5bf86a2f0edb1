"""Quilt-1M: histopathology image–caption pairs mined from educational videos (CSV).

Expected (column names as in the released ``quilt_1M_lookup.csv``, not verified here)::

    <root>/quilt_1M_lookup.csv   # columns image_path, caption, split (+ others, carried along if asked)
    <root>/quilt_1m/<image_path>

Several rows may share an image (several captions); they are merged. Quilt images come from
videos, and frames of one video are near-duplicates: set ``group_column`` to the video id
column of your copy so that no video straddles splits. Without it each image is its own group
(stated in the import info). Rows without a split value go to a group-hash split.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    assign_missing_splits,
    check_image_files,
    finalise_records,
    make_info,
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
    """Column with the source video id (recommended; see the module docstring)."""
    image_dir: str = "quilt_1m"


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the Quilt-1M lookup table."""
    require_paths(root, "Quilt-1M", LAYOUT, list(options.files.values()))
    skips = SkipCounter(options.on_bad_sample)
    frame = load_caption_files(root, options.files, image_column=options.image_column,
                               caption_column=options.caption_column, split_column=options.split_column,
                               image_dir=options.image_dir, group_column=options.group_column, source="quilt",
                               skips=skips)
    frame = assign_missing_splits(frame, options)
    if options.check_files:
        frame = check_image_files(frame, root, skips)
    frame = finalise_records(frame, {}, "quilt")
    notes = [] if options.group_column else ["no group_column: each image is its own group (video leakage unchecked)"]
    return ImportedDataset(frame, {}, root, make_info("quilt", options, frame, skips, notes))


SPEC = AdapterSpec(
    name="quilt",
    summary="Quilt-1M histopathology image–caption pairs (lookup CSV)",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import quilt --root /data/quilt --out quilt.parquet --set group_column=video_id",
)
