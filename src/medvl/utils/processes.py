"""Process hygiene: workers that die with the process that controls them.

A sweep's controller starts worker processes (directly, or through submitit's local executor,
whose job controller sits between them). When the controller is killed, even with
``SIGKILL``, its workers must stop too, or a rerun could train the same cell twice at once.
Two mechanisms, both installed by :func:`die_with`:

* ``PR_SET_PDEATHSIG`` (Linux ``prctl``): the kernel sends ``SIGKILL`` to the worker the moment
  its *direct* parent exits;
* a watchdog thread that polls the controller's identity (PID **and** start time, so a reused
  PID is not mistaken for it) once per ``interval`` seconds, and, when it is gone, kills the
  worker's own descendants (DataLoader workers, DDP ranks) and then the worker. This covers
  grandchildren (submitit local jobs) and platforms without ``prctl``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import threading
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

__all__ = ["ProcessIdentity", "descendants", "die_with", "kill_tree", "set_parent_death_signal"]

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as (host, PID, start time in clock ticks since boot); ``start`` is 0 where unknown."""

    host: str
    pid: int
    start: int

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process."""
        return cls(socket.gethostname(), os.getpid(), process_start_time(os.getpid()))

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity:
        """Process ``pid`` on this host."""
        return cls(socket.gethostname(), pid, process_start_time(pid))

    def is_alive(self) -> bool | None:
        """Whether this process still runs; ``None`` when it lives on another host (cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            pass
        if _is_zombie(self.pid):
            return False
        return self.start == 0 or process_start_time(self.pid) == self.start

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "start": self.start}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessIdentity:
        return cls(str(data["host"]), int(data["pid"]), int(data.get("start", 0)))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may contain spaces; fields after it are plain
    return text[text.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int:
    """Start time of ``pid`` in clock ticks after boot (``/proc/<pid>/stat`` field 22); 0 if unknown."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else 0


def _is_zombie(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] in ("Z", "X")  # type: ignore[index]


def descendants(pid: int) -> list[int]:
    """PIDs of every descendant of ``pid`` (children first), from ``/proc``; empty where unavailable."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    frontier = [pid]
    while frontier:
        nxt = []
        for parent in frontier:
            for child in children.get(parent, []):
                out.append(child)
                nxt.append(child)
        frontier = nxt
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL, include_self: bool = True) -> None:
    """Send ``sig`` to every descendant of ``pid`` (deepest last-found first), then to ``pid``."""
    for child in reversed(descendants(pid)):
        with suppress(OSError):
            os.kill(child, sig)
    if include_self:
        with suppress(OSError):
            os.kill(pid, sig)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


_watchdogs: dict[ProcessIdentity, threading.Thread] = {}


def die_with(controller: ProcessIdentity, *, interval: float = 1.0, direct_parent: bool = False) -> None:
    """Stop this process (and its descendants) as soon as ``controller`` is gone.

    ``direct_parent``: the controller is this process's parent, so ``PR_SET_PDEATHSIG`` applies
    too. Exits at once when the controller is already gone (it may have died before this call).
    Idempotent per controller.
    """
    if direct_parent:
        set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != controller.pid:  # the parent died before prctl took effect
            _die()
    if controller.is_alive() is False:
        _die()
    if controller in _watchdogs:
        return

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            if controller.is_alive() is False:
                _die()

    thread = threading.Thread(target=watch, name=f"medvl-watchdog-{controller.pid}", daemon=True)
    _watchdogs[controller] = thread
    thread.start()


def _die() -> None:
    kill_tree(os.getpid(), include_self=False)
    os._exit(137)
