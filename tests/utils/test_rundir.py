"""The run-directory lock: one live holder, named when refused; stale locks taken over; no leftovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medvl.utils.rundir import (
    LOCK_FILE,
    RunDirExistsError,
    RunDirLock,
    RunDirLockedError,
    StaleLockWarning,
    check_run_dir,
    locked_run_dir,
    prepare_run_dir,
)

HOLD = ("import sys, time; from medvl.utils.rundir import RunDirLock; lock = RunDirLock(sys.argv[1]); "
        "lock.acquire(); print('locked', flush=True); sys.stdin.readline(); lock.release()")


def _holder(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_holder_is_named(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunDirLockedError, match=f"in use by PID {proc.pid} on host"):
            RunDirLock(tmp_path / "run").acquire()
        with pytest.raises(RunDirLockedError):
            check_run_dir(tmp_path / "run", resume=True)  # the read-only probe sees it too
    finally:
        proc.communicate("\n")
    with RunDirLock(tmp_path / "run") as lock:  # released on exit: free again, not stale
        assert lock.held
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "run")
    proc.kill()
    proc.communicate()
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == proc.pid
    lock = RunDirLock(tmp_path / "run")
    with pytest.warns(StaleLockWarning, match=f"stale lock of PID {proc.pid}"):
        previous = lock.acquire()
    assert previous is not None and previous.pid == proc.pid
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_in_process_probe_does_not_drop_the_lock(tmp_path: Path) -> None:
    """POSIX locks are per process: a second descriptor closed would release the first's lock."""
    with locked_run_dir(tmp_path / "run") as run:
        (run / "x").write_text("1")
        check_run_dir(run, resume=True)  # probes while this process holds the lock
        with pytest.raises(RunDirLockedError, match="already locked by this process"):
            RunDirLock(run).acquire()
        code = subprocess.run([sys.executable, "-c", HOLD, str(run)], capture_output=True, text=True, input="\n")
        assert code.returncode != 0 and "RunDirLockedError" in code.stderr


def test_lock_file_does_not_make_a_directory_non_empty(tmp_path: Path) -> None:
    with RunDirLock(tmp_path / "run"):
        prepare_run_dir(tmp_path / "run")  # only the lock file: still a fresh directory
    (tmp_path / "run" / "result.json").write_text("{}")
    with pytest.raises(RunDirExistsError, match="--resume"):
        prepare_run_dir(tmp_path / "run")
    with pytest.raises(RunDirExistsError) as err:
        prepare_run_dir(tmp_path / "run", resumable=False)
    assert "--resume" not in str(err.value)
    prepare_run_dir(tmp_path / "run", overwrite=True)
    assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_FILE]


def test_failed_block_leaves_no_directory_behind(tmp_path: Path) -> None:
    with pytest.raises(ValueError), locked_run_dir(tmp_path / "out", resumable=False):
        raise ValueError("a command failed before writing")
    assert not (tmp_path / "out").exists()
