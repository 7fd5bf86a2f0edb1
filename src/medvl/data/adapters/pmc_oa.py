"""PMC-OA: sub-figure–caption pairs from PubMed Central articles (JSONL or CSV).

Expected (the released ``axiong/pmc_oa`` form; field names as documented there)::

    <root>/train.jsonl  valid.jsonl  test.jsonl   # one {"image": "<file>", "caption": "..."} per line
    <root>/caption_T060_filtered_top4_sep_v0_subfigures/<file>

Any CSV/JSONL with other column names works with ``image_column``/``caption_column``; one file
with a split column works with ``files='{all: pmc_oa.jsonl}'`` and ``split_column=split``.
The group is the PMC article id at the start of the image name (``PMC212319_Fig3_4.jpg`` →
``PMC212319``), so sub-figures of one article never straddle splits.
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
    finish_import,
    require_paths,
)
from medvl.data.adapters.image_text import article_group, load_caption_files

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/train.jsonl, valid.jsonl, test.jsonl   ({"image": ..., "caption": ...} per line; CSV also accepted)
<root>/caption_T060_filtered_top4_sep_v0_subfigures/   (the released image folder; image_dir=... for another)"""


class Options(CommonOptions):
    """PMC-OA import options."""

    files: dict[str, str] = Field(default_factory=lambda: {"train": "train.jsonl", "val": "valid.jsonl", "test": "test.jsonl"})
    """Split → file (relative to root); ``{all: file}`` with ``split_column`` for a single file."""
    image_column: str = "image"
    caption_column: str = "caption"
    split_column: str | None = None
    image_dir: str = "caption_T060_filtered_top4_sep_v0_subfigures"


def load(root: Path, options: Options) -> ImportedDataset:
    """Read PMC-OA caption files."""
    require_paths(root, "PMC-OA", LAYOUT, list(options.files.values()))
    skips = SkipCounter(options.on_bad_sample)
    frame = load_caption_files(root, options.files, image_column=options.image_column,
                               caption_column=options.caption_column, split_column=options.split_column,
                               image_dir=options.image_dir, group_column=None, source="pmc_oa", skips=skips,
                               group_of=article_group)
    frame = assign_missing_splits(frame, options)
    return finish_import(frame, {}, root, "pmc_oa", options, skips)


SPEC = AdapterSpec(
    name="pmc_oa",
    summary="PMC-OA sub-figure captions (train/valid/test JSONL or CSV), grouped by PMC article",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import pmc_oa --root /data/pmc_oa --out pmc_oa.parquet",
)
