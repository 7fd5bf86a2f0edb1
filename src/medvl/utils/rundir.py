"""Run directories: created once, never overwritten unless the user asks, written by one process at a time.

* :func:`check_run_dir` says, without touching anything, whether a directory may be used
  (commands call it before their validation so an "already exists" error comes first);
* :func:`prepare_run_dir` creates it (or empties it with ``overwrite``, keeps it with ``resume``);
* :class:`RunDirLock` / :func:`locked_run_dir` hold an advisory lock on it while a command writes.

The lock is a POSIX record lock (``fcntl.lockf``) on ``<dir>/.medvl.lock``, which also records the
holder (PID, host, start time, command line). The kernel drops the lock when its process dies
(even by ``kill -9``), so a lock file whose lock can be taken is *stale*: its previous holder is
reported and the lock taken over. A lock that cannot be taken names its live holder in the
error. POSIX locks are not inherited by ``fork``ed children (data-loader workers) and work on
NFS, where ``flock`` may not. The lock file is ignored when deciding whether a directory is empty.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.utils.errors import UserInputError

__all__ = [
    "LOCK_FILE",
    "LockHolder",
    "RunDirExistsError",
    "RunDirLock",
    "RunDirLockedError",
    "StaleLockWarning",
    "check_run_dir",
    "locked_run_dir",
    "prepare_run_dir",
]

#: Name of the lock file inside a locked directory.
LOCK_FILE = ".medvl.lock"
#: Lock files this process holds (POSIX locks are per process: a second descriptor on the same
#: file would "succeed" and, when closed, drop the first one's lock, so this process checks here).
_HELD: set[str] = set()


class RunDirExistsError(UserInputError, FileExistsError):
    """Raised when a run directory already holds results and ``overwrite`` was not given."""


class RunDirLockedError(UserInputError, BlockingIOError):
    """Another live process holds the directory's lock; the message names it (PID, host, command)."""


class StaleLockWarning(UserWarning):
    """The lock file names a holder that is gone (killed); its lock was taken over."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run directory's lock."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"PID {self.pid} on host {self.host} (since {self.started}: {self.command})"

    @classmethod
    def current(cls) -> LockHolder:
        return cls(pid=os.getpid(), host=socket.gethostname(),
                   started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300])

    @classmethod
    def parse(cls, text: str) -> LockHolder | None:
        try:
            data: Any = json.loads(text)
            return cls(pid=int(data["pid"]), host=str(data["host"]), started=str(data.get("started", "?")),
                       command=str(data.get("command", "?")))
        except (ValueError, KeyError, TypeError):
            return None


class RunDirLock:
    """Exclusive advisory lock on a directory (see the module docstring).

    ``acquire()`` raises :class:`RunDirLockedError` when a live process holds it and returns the
    previous, dead holder when the lock was stale (``None`` otherwise). Re-entrant within one
    object; use as a context manager.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None
        #: whether :meth:`acquire` created the directory (then ``release(remove_if_empty=True)`` removes it)
        self.created_dir = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> LockHolder | None:
        """The holder recorded in the lock file (live or stale), if any."""
        try:
            return LockHolder.parse(self.path.read_text(encoding="utf-8"))
        except OSError:
            return None

    def probe(self) -> None:
        """Raise :class:`RunDirLockedError` if a live process holds the lock; changes nothing on disk."""
        if self._fd is not None or not self.path.is_file() or self._key() in _HELD:
            return
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError:
            return
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._raise_locked()
        finally:
            os.close(fd)  # closing drops a lock this probe took

    def _raise_locked(self) -> None:
        holder = self.holder()
        who = holder.describe() if holder is not None else "another process"
        raise RunDirLockedError(
            f"{self.directory} is in use by {who}; wait for it to finish or stop it (lock file {self.path})"
        ) from None

    def _key(self) -> str:
        return os.path.realpath(self.path)

    def acquire(self) -> LockHolder | None:
        if self._fd is not None:
            return None
        if self._key() in _HELD:
            raise RunDirLockedError(f"{self.directory} is already locked by this process (PID {os.getpid()})")
        self.created_dir = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self._raise_locked()
        previous = LockHolder.parse(os.pread(fd, 65536, 0).decode("utf-8", errors="replace"))
        record = json.dumps(LockHolder.current().__dict__).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd
        _HELD.add(self._key())
        if previous is not None and previous.pid != os.getpid():
            warnings.warn(f"{self.directory}: took over a stale lock of {previous.describe()}, which is gone",
                          StaleLockWarning, stacklevel=2)
            return previous
        return None

    def release(self, *, remove_if_empty: bool = False) -> None:
        """Release the lock and empty the holder record (the file stays: others may be waiting on it).

        With ``remove_if_empty``, a directory that :meth:`acquire` created and that holds nothing but
        the lock file is removed (a command that failed before writing leaves nothing behind).
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.discard(self._key())
        with suppress(OSError):
            os.ftruncate(fd, 0)
        if remove_if_empty and self.created_dir and not _has_content(self.directory):
            with suppress(OSError):
                self.path.unlink()
                self.directory.rmdir()
        with suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _has_content(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(child.name != LOCK_FILE for child in run_dir.iterdir())


def check_run_dir(path: str | os.PathLike[str], *, overwrite: bool = False, resume: bool = False,
                  resumable: bool = True) -> None:
    """Raise :class:`RunDirExistsError` when ``path`` holds results and neither flag allows using it,
    :class:`RunDirLockedError` when a live process holds its lock.

    Writes nothing. ``resumable`` says whether the command has a ``--resume`` to suggest.
    """
    run_dir = Path(path)
    RunDirLock(run_dir).probe()
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirExistsError(f"{run_dir} exists and is not a directory")
    if _has_content(run_dir) and not (resume or overwrite):
        hint = "pass --overwrite to replace it or --resume to continue it" if resumable \
            else "pass --overwrite to replace it or choose another output directory"
        raise RunDirExistsError(f"run directory {run_dir} already exists and is not empty; {hint}")


def prepare_run_dir(path: str | os.PathLike[str], overwrite: bool = False, resume: bool = False, *,
                    resumable: bool = True) -> Path:
    """Create ``path`` for a new run.

    An existing non-empty directory is an error unless ``overwrite`` (its contents are removed,
    except a lock file) or ``resume`` (it is kept as is, for continuing a run) is set.
    """
    run_dir = Path(path)
    check_run_dir(run_dir, overwrite=overwrite, resume=resume, resumable=resumable)
    if _has_content(run_dir) and not resume:
        for child in run_dir.iterdir():
            if child.name == LOCK_FILE:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


@contextmanager
def locked_run_dir(path: str | os.PathLike[str], *, overwrite: bool = False, resume: bool = False,
                   resumable: bool = True) -> Iterator[Path]:
    """Lock ``path`` (creating it), then :func:`prepare_run_dir` it; the lock is held for the block.

    If the block fails and the directory, created here, holds nothing else, it is removed again.
    """
    check_run_dir(path, overwrite=overwrite, resume=resume, resumable=resumable)  # before creating anything
    lock = RunDirLock(path)
    lock.acquire()
    failed = True
    try:
        yield prepare_run_dir(path, overwrite=overwrite, resume=resume, resumable=resumable)
        failed = False
    finally:
        lock.release(remove_if_empty=failed)
