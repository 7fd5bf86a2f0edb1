"""Content hashes used for provenance and caches (sha256, hex)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from medvl.utils.io import to_jsonable

__all__ = ["hash_file", "hash_object"]


def hash_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def hash_object(obj: Any) -> str:
    """sha256 of the canonical (sorted-key) JSON form of ``obj``."""
    payload = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
