"""Shared pieces of the adapters whose labels are folder names or whose images live in nested folders.

* :func:`class_folder_records` — one record per image under ``<base>/<class folder>/``, the
  class index from the folder name (NCT-CRC-HE, LC25000, BACH). The walk is sorted, so the
  output never depends on directory listing order.
* :func:`index_images` — file name → relative path over a set of folders, refusing a file
  name found twice (HAM10000's two image parts, PAD-UFES-20's ``imgs_part_*``).
* :func:`find_dir` — the one directory under a root with a given name (releases unpack with
  or without their top folder).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from medvl.data.adapters.base import DatasetFormatError, DatasetLayoutError

__all__ = ["IMAGE_SUFFIXES", "class_folder_records", "find_dir", "index_images"]

#: Image file suffixes picked up by folder walks (lower-case).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def find_dir(root: Path, name: str, dataset: str, layout: str, *, max_depth: int = 3) -> Path:
    """The unique directory called ``name`` at ``root`` or up to ``max_depth`` levels below it."""
    if not root.is_dir():
        raise DatasetLayoutError(f"{dataset}: root {root} is not a directory.\nExpected layout:\n{layout}")
    if root.name == name:
        return root
    found: list[Path] = []
    level = [root]
    for _ in range(max_depth):
        level = sorted(p for parent in level for p in parent.iterdir() if p.is_dir())
        found += [p for p in level if p.name == name]
        if found:
            break
    if not found:
        raise DatasetLayoutError(f"{dataset}: no folder {name!r} under {root} (searched {max_depth} levels)\n"
                                 f"Expected layout:\n{layout}")
    if len(found) > 1:
        raise DatasetLayoutError(f"{dataset}: several folders named {name!r} under {root}: "
                                 f"{[str(p.relative_to(root)) for p in found]}; point --root at one of them")
    return found[0]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folder_records(root: Path, base: Path, folders: Mapping[str, str], *, split: str = "",
                         id_prefix: str = "", dataset: str, layout: str) -> pd.DataFrame:
    """Records for every image under ``base/<folder>/`` (recursively), labelled by folder.

    ``folders`` maps a folder name to its class name; the class index is the position of the
    class in ``folders``' values. A listed folder that is missing, or one without images, is a
    layout error naming it. Columns: ``id`` (``<id_prefix><folder>/<relative stem>``), ``image``
    (relative to ``root``), ``cls`` (class index), ``split``, ``group`` (= ``id``).
    """
    classes = list(dict.fromkeys(folders.values()))
    missing = [name for name in folders if not (base / name).is_dir()]
    if missing:
        raise DatasetLayoutError(f"{dataset}: missing class folder(s) {missing} under {base}\nExpected layout:\n{layout}")
    rows = []
    for folder, cls in folders.items():
        images = _images_in(base / folder)
        if not images:
            raise DatasetLayoutError(f"{dataset}: class folder {base / folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for path in images:
            stem = path.relative_to(base).with_suffix("").as_posix()
            record_id = f"{id_prefix}{stem}"
            rows.append({"id": record_id, "image": path.relative_to(root).as_posix(), "cls": classes.index(cls),
                         "split": split, "group": record_id})
    return pd.DataFrame(rows, columns=["id", "image", "cls", "split", "group"])


def index_images(root: Path, folders: Iterable[Path], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, str]:
    """Map each image file name (with extension) under ``folders`` to its path relative to ``root``."""
    index: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in suffixes:
                continue
            relative = path.relative_to(root).as_posix()
            previous = index.setdefault(path.name, relative)
            if previous != relative:
                raise DatasetFormatError(f"image file name {path.name!r} occurs twice: {previous} and {relative}")
    return index
