"""Shared pieces of the VQA adapters (VQA-RAD, SLAKE, PathVQA): the record layout and answer types.

A VQA record (docs/DESIGN.md, "VQA records") is one question about one image: ``id`` (the
dataset's question id), ``image``, ``texts`` = [] and the columns ``question``, ``answer``,
``answer_type`` (``open``/``closed``), ``question_type``; ``group`` keeps the dataset's own
split intact (the image where the official split is by image, else the question).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from medvl.data.adapters.base import DatasetFormatError, SkipCounter

__all__ = ["VQA_RECORD_COLUMNS", "answer_type_of", "read_question_list", "vqa_frame", "vqa_record"]

VQA_RECORD_COLUMNS = ["id", "image", "texts", "question", "answer", "answer_type", "question_type", "group", "split"]
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")


def read_question_list(path: Path, required: tuple[str, ...]) -> list[Any]:
    """The question objects of a VQA JSON file (VQA-RAD, SLAKE): a list whose every item has the
    ``required`` keys. Raises :class:`DatasetFormatError` naming the file (and the question's
    position) for invalid JSON, a top level that is not a list, or a question missing a key."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(items, list):
        raise DatasetFormatError(f"{path}: expected a list of question objects, got {type(items).__name__}")
    for number, item in enumerate(items):
        missing = [k for k in required if k not in item]
        if missing:
            raise DatasetFormatError(f"{path}: question #{number} lacks {missing}")
    return items


def answer_type_of(answer: str, stated: Any = None) -> str:
    """``open``/``closed`` as the dataset states it (``OPEN``/``CLOSED``), else closed for yes/no answers."""
    text = str(stated or "").strip().lower()
    if text in ("open", "closed"):
        return text
    return "closed" if str(answer).strip().lower() in ("yes", "no") else "open"


def answer_kind(answer: str) -> str:
    """PathVQA's answer categories as the benchmarking paper reports them: yes/no, number, other."""
    text = str(answer).strip().lower()
    if text in ("yes", "no"):
        return "yes/no"
    return "number" if _NUMBER.match(text) else "other"


def vqa_record(rid: str, image: str, question: Any, answer: Any, answer_type: str, question_type: str, group: str,
               split: str, skips: SkipCounter) -> dict[str, Any] | None:
    """One record, or None (counted in ``skips``) when the question or answer is empty."""
    q, a = str(question if question is not None else "").strip(), str(answer if answer is not None else "").strip()
    if not q:
        skips.bad("empty question", rid)
        return None
    if not a:
        skips.bad("empty answer", rid)
        return None
    return {"id": rid, "image": image, "texts": [], "question": q, "answer": a, "answer_type": answer_type,
            "question_type": question_type, "group": group, "split": split}


def vqa_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The records as a DataFrame with the VQA columns (also when empty)."""
    return pd.DataFrame(records, columns=VQA_RECORD_COLUMNS)
