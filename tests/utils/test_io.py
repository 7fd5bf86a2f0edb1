"""Atomic writes keep the umask's mode; atomic appends never leave a torn line."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from medvl.utils import io as medvl_io
from medvl.utils.io import append_line, atomic_write_text, umask


def test_umask_is_read_without_changing_it() -> None:
    previous = os.umask(0o027)
    try:
        assert umask() == 0o027
        assert umask() == 0o027
    finally:
        os.umask(previous)


def test_atomic_write_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_append_line_adds_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_line(path, '{"a": 1}')
    append_line(path, '{"a": 2}\n')
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'


def test_failed_append_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short write (a full disk) leaves the file exactly as it was, and the error is raised."""
    path = tmp_path / "log.jsonl"
    append_line(path, '{"a": 1}')
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[:3])

    monkeypatch.setattr(medvl_io.os, "write", short_write)
    with pytest.raises(OSError, match="short write"):
        append_line(path, '{"a": 2}')

    def full_disk(fd: int, data: bytes) -> int:
        real_write(fd, data[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(medvl_io.os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        append_line(path, '{"a": 3}')
    assert path.read_text() == '{"a": 1}\n'
