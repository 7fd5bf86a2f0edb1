"""VQA-RAD (Lau et al. 2018): 3,515 clinician-written questions about 315 radiology images.

Expected (the public release)::

    <root>/VQA_RAD Dataset Public.json        # a list of question objects
    <root>/VQA_RAD Image Folder/<image_name>  # synpic*.jpg

Fields used: ``qid``, ``image_name``, ``question``, ``answer``, ``answer_type`` (OPEN/CLOSED),
``question_type`` (PRES, ABN, MODALITY, ORGAN, POS, …) and ``phrase_type``: ``test_freeform`` and
``test_para`` questions are the official test split, the others (``freeform``, ``para``) train;
val is carved from train (``val_fraction``). The official split is by question — test questions
ask about images that training questions also show — so ``group`` is the question id, not the
image (grouping by image would contradict the benchmark's own split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    carve_val_split,
    finish_import,
    require_paths,
)
from medvl.data.adapters.vqa_records import answer_type_of, read_question_list, vqa_frame, vqa_record

__all__ = ["LAYOUT", "SPEC", "Options", "load"]

JSON_FILE = "VQA_RAD Dataset Public.json"
IMAGE_DIR = "VQA_RAD Image Folder"
LAYOUT = f"""\
<root>/{JSON_FILE}   (list of {{qid, image_name, question, answer, answer_type, question_type, phrase_type, ...}})
<root>/{IMAGE_DIR}/<image_name>"""


class Options(CommonOptions):
    """VQA-RAD import options."""

    json_file: str = JSON_FILE
    image_dir: str = IMAGE_DIR


def load(root: Path, options: Options) -> ImportedDataset:
    """Read the public JSON; one record per question."""
    require_paths(root, "VQA-RAD", LAYOUT, [options.json_file, options.image_dir])
    items = read_question_list(root / options.json_file, ("qid", "image_name", "question", "answer"))
    skips = SkipCounter(options.on_bad_sample)
    records: list[dict[str, Any]] = []
    for item in items:
        image = str(item["image_name"]).strip()
        split = "test" if str(item.get("phrase_type", "")).lower().startswith("test") else "train"
        rec = vqa_record(f"vqarad-{item['qid']}", f"{options.image_dir}/{image}", item["question"], item["answer"],
                         answer_type_of(item["answer"], item.get("answer_type")),
                         str(item.get("question_type", "")).strip(), f"vqarad-{item['qid']}", split, skips)
        if rec is not None:
            records.append(rec)
    frame = carve_val_split(vqa_frame(records), options)
    return finish_import(frame, {}, root, "vqa_rad", options, skips)


SPEC = AdapterSpec(
    name="vqa_rad",
    summary="VQA-RAD radiology VQA (public JSON; test = phrase_type test_*), one record per question",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import vqa_rad --root /data/vqa_rad --out vqa_rad.parquet",
)
