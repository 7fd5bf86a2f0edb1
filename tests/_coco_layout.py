"""A tiny MS-COCO download in its public layout (``annotations/{instances,captions}_<split><year>.json``,
``<split><year>/<file_name>``): three train images (one without objects) and one val image.

Used by the COCO adapter tests and by the README-commands test, which runs the README's
``medvl data import coco --root /data/coco …`` on it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

CATEGORIES = [{"id": 90, "name": "toothbrush", "supercategory": "indoor"},
              {"id": 1, "name": "person", "supercategory": "person"},
              {"id": 18, "name": "dog", "supercategory": "animal"}]


def _jpeg(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), 128).save(path, format="JPEG")
    return path


def write_coco(root: Path, image: Callable[[Path], object] = _jpeg, year: int = 2017,
               shuffle_seed: int | None = None) -> None:
    """Write the annotation files and 8×8 JPEGs under ``root`` (``shuffle_seed`` shuffles every list)."""
    images = {"train": [(1, "a.jpg"), (2, "b.jpg"), (3, "c.jpg")], "val": [(4, "d.jpg")]}
    instances = {"train": [(1, 1), (1, 18), (2, 90), (2, 90)], "val": [(4, 1)]}  # image 3: no objects
    captions = {"train": [(1, f"image one caption {k}") for k in range(6)]  # six captions
                + [(2, f"image two caption {k}") for k in range(5)] + [(3, "image three")],
                "val": [(4, "image four")]}
    ann_id = 100
    for subset in ("train", "val"):
        imgs = [{"id": i, "file_name": f"{i:012d}_{n}", "height": 8, "width": 8} for i, n in images[subset]]
        inst = [{"id": ann_id + k, "image_id": i, "category_id": c, "iscrowd": k % 2, "bbox": [0, 0, 1, 1]}
                for k, (i, c) in enumerate(instances[subset])]
        caps = [{"id": ann_id + 50 + k, "image_id": i, "caption": c} for k, (i, c) in enumerate(captions[subset])]
        if shuffle_seed is not None:
            rng = random.Random(shuffle_seed)
            for items in (imgs, inst, caps):
                rng.shuffle(items)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        cats = list(CATEGORIES) if shuffle_seed is None else sorted(CATEGORIES, key=lambda c: c["name"])
        (root / f"annotations/instances_{subset}{year}.json").write_text(
            json.dumps({"images": imgs, "annotations": inst, "categories": cats}))
        (root / f"annotations/captions_{subset}{year}.json").write_text(json.dumps({"images": imgs, "annotations": caps}))
        for img in imgs:
            image(root / f"{subset}{year}" / img["file_name"])
