"""SLAKE (Liu et al. 2021), English questions: a bilingual radiology VQA set with official splits.

Expected (the released ``Slake1.0`` folder)::

    <root>/train.json  validate.json  test.json   # lists of question objects
    <root>/imgs/<img_name>                         # xmlab<N>/source.jpg

Fields used: ``qid``, ``img_name``, ``question``, ``answer``, ``answer_type`` (OPEN/CLOSED),
``content_type`` (Organ, Position, Abnormality, Modality, Plane, Quantity, Color, Size, Shape,
KG) as ``question_type``, and ``q_lang``: only ``en`` questions are imported (``language``).
Splits are the files'; ``group`` is the question id (the official split is by question).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    finish_import,
    require_paths,
)
from medvl.data.adapters.vqa_records import answer_type_of, read_question_list, vqa_frame, vqa_record

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

LAYOUT = """\
<root>/train.json, validate.json, test.json   (lists of {qid, img_name, question, answer, answer_type,
                                                content_type, q_lang, ...})
<root>/imgs/<img_name>                          (xmlab<N>/source.jpg)"""


class Options(CommonOptions):
    """SLAKE import options."""

    files: dict[str, str] = Field(default_factory=lambda: {"train": "train.json", "val": "validate.json",
                                                           "test": "test.json"})
    image_dir: str = "imgs"
    language: str = "en"
    """``q_lang`` of the imported questions (``en`` or ``zh``)."""


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the split files; one record per question in ``language``."""
    require_paths(root, "SLAKE", LAYOUT, [*options.files.values(), options.image_dir])
    skips = SkipCounter(options.on_bad_sample)
    records: list[dict[str, Any]] = []
    for split, name in options.files.items():
        for item in read_question_list(root / name, ("qid", "img_name", "question", "answer")):
            if str(item.get("q_lang", options.language)) != options.language:
                skips.filter(f"q_lang is not {options.language}")
                continue
            rid = f"slake-{item['qid']}"
            rec = vqa_record(rid, f"{options.image_dir}/{str(item['img_name']).strip()}", item["question"],
                             item["answer"], answer_type_of(item["answer"], item.get("answer_type")),
                             str(item.get("content_type", "")).strip(), rid, split, skips)
            if rec is not None:
                records.append(rec)
    return finish_import(vqa_frame(records), {}, root, "slake", options, skips)


SPEC = AdapterSpec(
    name="slake",
    summary="SLAKE radiology VQA, English questions (train/validate/test JSON), one record per question",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import slake --root /data/Slake1.0 --out slake.parquet",
)
