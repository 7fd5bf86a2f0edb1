"""Atomic file writes, atomic line appends and JSON helpers.

Every file medvl writes goes through these functions: the content is written to a temporary
file in the same directory and renamed over the target, so a killed process never leaves a
half-written result behind. The file gets the mode an ordinary ``open()`` would give it
(``0o666`` minus the process umask), not the ``0o600`` of :func:`tempfile.mkstemp`, so
collaborators on a shared server can read results when the umask allows it.

Logs that grow record by record (JSONL) use :func:`append_line`: the whole line is written
with one ``write`` on an ``O_APPEND`` descriptor and, if that fails part-way (a full disk),
the file is cut back to its previous length, so no torn line is left behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

__all__ = [
    "append_line",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_json",
    "to_jsonable",
    "umask",
]


def umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``; elsewhere set-and-restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # no way to read it without setting it elsewhere
    os.umask(current)
    return current


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it over ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp creates 0o600; give the mode open() would
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp_name)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb", encoding=None) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append ``line`` (a newline is added when missing) to ``path`` as one atomic record.

    One ``write`` on an ``O_APPEND`` descriptor; when it fails or is short (e.g. ``ENOSPC``) the
    file is truncated back to where it ended before and the error is raised, so readers never
    see a torn last line. Not for files several processes append to at once.
    """
    data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write to {path}: {written} of {len(data)} bytes (disk full?)")
        except BaseException:
            with suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and sets into JSON-serialisable values.

    Non-finite floats become ``None`` (JSON has no NaN); callers that need to distinguish
    NaN should record it explicitly.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    tolist: Callable[[], Any] | None = getattr(obj, "tolist", None)
    if tolist is not None:  # numpy / torch scalars and arrays
        return to_jsonable(tolist())
    if hasattr(obj, "model_dump"):  # pydantic models
        return to_jsonable(obj.model_dump(mode="json"))
    return str(obj)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` (after :func:`to_jsonable`) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
