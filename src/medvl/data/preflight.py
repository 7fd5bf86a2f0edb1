"""File pre-flight: every record's file exists under the root, is readable and (optionally) decodes.

Used by ``medvl data check`` and by :class:`medvl.data.dataset.ImageTextDataset` with
``verify_files``. Problems name the record, the path and the reason (a decoder's own error
included, e.g. an image beyond Pillow's decompression-bomb limit).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medvl.data.images import BagLayout, ImageLoadError, load_record
from medvl.data.manifest import Manifest, ManifestError

__all__ = ["FileProblem", "preflight"]


@dataclass(frozen=True)
class FileProblem:
    """A file that is missing, outside the root or unreadable (row = position in the manifest)."""

    row: int
    id: str
    path: str
    reason: str




def _check_file(
    root: Path, root_resolved: Path, row: int, rid: str, image: str, image_type: str, decode: bool, kw: dict[str, Any]
) -> FileProblem | None:
    path = root / image
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:
        return FileProblem(row, rid, str(path), f"cannot resolve path ({exc})")
    if not resolved.is_relative_to(root_resolved):
        return FileProblem(row, rid, str(path), f"resolves outside the root {root_resolved} (symlink?)")
    if not resolved.exists():
        return FileProblem(row, rid, str(path), "file not found")
    if not resolved.is_file():
        return FileProblem(row, rid, str(path), "not a regular file")
    if not os.access(resolved, os.R_OK):
        return FileProblem(row, rid, str(path), "file is not readable (permissions)")
    if decode:
        try:
            load_record(path, image_type, rid, **kw)
        except ImageLoadError as exc:
            return FileProblem(row, rid, str(path), exc.reason)
    return None


def preflight(
    manifest: Manifest,
    *,
    decode: bool = True,
    rows: Sequence[int] | np.ndarray | None = None,
    workers: int = 1,
    dicom_window: Literal["header", "minmax"] = "header",
    bag_key: str | None = None,
    progress: Callable[[int], None] | None = None,
    bag_layout: BagLayout = "auto",
) -> list[FileProblem]:
    """Check that every record's file exists under the root, is readable and (``decode``) loads.

    Symlinks are resolved, so a link pointing outside the root is reported. Rows whose image
    reference is not a non-empty string are skipped here (schema validation reports them).
    ``progress`` is called with the number of files checked so far. Returns the problems,
    sorted by row.
    """
    if manifest.root is None:
        raise ManifestError("manifest has no root; pass --root / root= so files can be checked")
    root = manifest.root
    root_resolved = root.resolve()
    images = manifest.records["image"].to_numpy(dtype=object)
    ids = manifest.records["id"].to_numpy(dtype=object)
    types = manifest.image_types()
    selected = np.arange(len(manifest)) if rows is None else np.asarray(rows, dtype=np.int64)
    kw: dict[str, Any] = {"dicom_window": dicom_window, "bag_key": bag_key, "bag_layout": bag_layout}

    def check(row: int) -> FileProblem | None:
        image = images[row]
        if not isinstance(image, str) or not image:
            return None
        return _check_file(root, root_resolved, row, str(ids[row]), image, str(types[row]), decode, kw)

    problems: list[FileProblem] = []
    done = 0
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(check, selected.tolist(), chunksize=64):
                done += 1
                if result is not None:
                    problems.append(result)
                if progress is not None and done % 256 == 0:
                    progress(done)
    else:
        for row in selected.tolist():
            result = check(row)
            done += 1
            if result is not None:
                problems.append(result)
            if progress is not None and done % 256 == 0:
                progress(done)
    if progress is not None:
        progress(done)
    return sorted(problems, key=lambda p: p.row)
