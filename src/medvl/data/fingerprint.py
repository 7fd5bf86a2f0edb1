"""Fingerprints of the files a manifest references, so caches and resumes notice replaced images.

A manifest's :meth:`~medvl.data.manifest.Manifest.hash` covers its records, not the bytes of the
images they point at: an image replaced under the same name leaves it unchanged. Anything that
trusts earlier work done on the files (the evaluation embedding cache, ``medvl train --resume``)
also compares :func:`files_fingerprint`, in one of two modes chosen by ``data.file_fingerprint``:

* ``stat`` (default) — each file's size and modification time (nanoseconds): one ``stat`` per
  file, cheap on millions of files; misses a same-size rewrite that restores the mtime.
* ``content`` — sha256 of each file's bytes: exact, costs reading every file.

Records are taken in manifest order; a file that cannot be read is fingerprinted as missing
(loading reports it properly later).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np

from medvl.data.manifest import Manifest, ManifestError
from medvl.utils.hashing import hash_file

__all__ = ["FINGERPRINT_MODES", "FingerprintMode", "files_fingerprint"]

FingerprintMode = Literal["stat", "content"]
FINGERPRINT_MODES: tuple[str, ...] = ("stat", "content")


def _file_token(path: Path, mode: str) -> str:
    try:
        if mode == "content":
            return hash_file(path)
        info = path.stat()
        return f"{info.st_size}:{info.st_mtime_ns}"
    except OSError:
        return "missing"


def files_fingerprint(manifest: Manifest, mode: FingerprintMode = "stat", *, workers: int = 8) -> str:
    """sha256 (hex) over every record's id, image path and file token (size + mtime, or content hash).

    Args:
        manifest: the records (``root`` must be set); their order matters.
        mode: ``stat`` (size + mtime) or ``content`` (sha256 of the bytes).
        workers: threads for the file system calls (I/O bound).
    """
    if mode not in FINGERPRINT_MODES:
        raise ManifestError(f"file fingerprint mode must be one of {FINGERPRINT_MODES}, got {mode!r}")
    if manifest.root is None:
        raise ManifestError("manifest has no root; image files cannot be fingerprinted")
    root = manifest.root
    images = [str(p) for p in manifest.records["image"].to_numpy(dtype=object)]
    paths = [root / image for image in images]
    if workers > 1 and len(paths) > 64:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            tokens = list(pool.map(lambda p: _file_token(p, mode), paths, chunksize=256))
    else:
        tokens = [_file_token(p, mode) for p in paths]
    digest = hashlib.sha256(f"medvl-files-v1:{mode}\n".encode())
    ids = np.asarray(manifest.records["id"].astype(str).to_numpy(dtype=object))
    for rid, image, token in zip(ids.tolist(), images, tokens, strict=True):
        digest.update(f"{rid}\t{image}\t{token}\n".encode("utf-8", errors="surrogateescape"))
    return digest.hexdigest()
