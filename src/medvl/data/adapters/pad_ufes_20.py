"""PAD-UFES-20: smartphone photos of skin lesions with clinical metadata (Pacheco et al. 2020).

The Mendeley Data release has ``metadata.csv`` (``patient_id, lesion_id, …, diagnostic, …,
img_id, biopsed``) and the images in ``images/`` (the zip unpacks to ``images/imgs_part_{1,2,3}/``
in some copies; images anywhere under the root are indexed by file name, ``PAT_<patient>_<lesion>_<n>.png``).
``diagnostic`` ∈ {ACK, BCC, MEL, NEV, SCC, SEK} (Bowen's disease is filed under SCC in the
release). The group is ``patient_id``: several lesions and photos of one patient never straddle
splits. No official split: ``test_fraction`` (default 0.2 — the benchmarking paper's 460 of
2,298 images) of the patients is hashed to test.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import Field

from medvl.data.adapters.base import (
    AdapterSpec,
    CommonOptions,
    ImportedDataset,
    SkipCounter,
    finish_import,
    hash_split,
    normalise_ids,
    read_table,
    require_columns,
    require_paths,
)
from medvl.data.adapters.captions import load_template, template_texts
from medvl.data.adapters.folders import index_images
from medvl.data.manifest import TaskSpec

__all__ = ["CLASSES", "LAYOUT", "SPEC", "Options", "load"]

CLASSES: dict[str, str] = {
    "ACK": "actinic keratosis", "BCC": "basal cell carcinoma", "MEL": "melanoma", "NEV": "nevus",
    "SCC": "squamous cell carcinoma", "SEK": "seborrheic keratosis",
}
LAYOUT = """\
<root>/metadata.csv            (patient_id, lesion_id, ..., diagnostic, ..., img_id, biopsed)
<root>/images/PAT_<patient>_<lesion>_<n>.png   (or images/imgs_part_*/…; any folder under root)"""


class Options(CommonOptions):
    """PAD-UFES-20 import options."""

    test_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)


def load(root: Path, options: Options) -> ImportedDataset:
    """Read ``metadata.csv`` and index the images under ``root``."""
    require_paths(root, "PAD-UFES-20", LAYOUT, ["metadata.csv"])
    table = read_table(root / "metadata.csv", id_columns=["patient_id", "lesion_id", "img_id"])
    require_columns(table, ["patient_id", "img_id", "diagnostic"], "metadata.csv")
    index = index_images(root, [root])
    skips = SkipCounter(options.on_bad_sample)
    codes = list(CLASSES)
    rows = []
    patients = normalise_ids(table["patient_id"], "metadata.csv patient_id", strip_prefix="PAT_")
    for image, diagnostic, patient in zip(table["img_id"].astype(str).str.strip(),
                                          table["diagnostic"].astype(str).str.strip(), patients, strict=True):
        if diagnostic not in CLASSES:
            skips.bad("unknown diagnostic", image, f"{diagnostic!r} not in {codes}")
            continue
        rows.append({"id": Path(image).stem, "image": index.get(image, f"images/{image}"), "group": patient,
                     "labels.diagnostic": codes.index(diagnostic)})
    frame = pd.DataFrame(rows, columns=["id", "image", "group", "labels.diagnostic"])
    frame["split"] = hash_split(frame["group"].tolist(), options.split_seed,
                                {"val": options.val_fraction, "test": options.test_fraction})
    tasks = {"diagnostic": TaskSpec("diagnostic", "multiclass", tuple(codes))}
    if options.caption_template:
        frame["texts"] = template_texts(frame["labels.diagnostic"].tolist(), list(CLASSES.values()),
                                        load_template(options.caption_template))
    return finish_import(frame, tasks, root, "pad_ufes_20", options, skips, ["split by patient_id hash"])


SPEC = AdapterSpec(
    name="pad_ufes_20",
    summary="PAD-UFES-20 smartphone skin-lesion photos, 6 diagnoses, patient-level split",
    options=Options,
    load=load,
    layout=LAYOUT,
    command="medvl data import pad_ufes_20 --root /data/PAD-UFES-20 --out pad_ufes_20.parquet",
)
