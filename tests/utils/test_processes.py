"""Workers die with their controller: PR_SET_PDEATHSIG for direct children, a watchdog for the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medvl.utils.processes import ProcessIdentity, descendants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl")


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ProcessIdentity.of(pid).is_alive() is False:
            return True
        time.sleep(0.05)
    return False


def _wait_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_identity_tells_a_reused_pid_from_the_original() -> None:
    me = ProcessIdentity.current()
    assert me.is_alive() is True
    assert ProcessIdentity(me.host, me.pid, me.start + 1).is_alive() is False  # same PID, other start time
    assert ProcessIdentity("another-host", me.pid, me.start).is_alive() is None


def test_watchdog_kills_a_worker_and_its_children_when_the_controller_is_killed(tmp_path: Path) -> None:
    controller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ready = tmp_path / "ready"
    worker_code = textwrap.dedent(f"""
        import subprocess, sys, time
        from medvl.utils.processes import ProcessIdentity, die_with
        die_with(ProcessIdentity.of({controller.pid}), interval=0.2)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(ready)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)
    worker = subprocess.Popen([sys.executable, "-c", worker_code])
    try:
        grandchild = int(_wait_file(ready))
        assert grandchild in descendants(worker.pid)
        controller.send_signal(signal.SIGKILL)
        controller.wait()
        assert worker.wait(timeout=10) == 137
        assert _gone(grandchild, 5), "the worker's own child outlived it"
    finally:
        for proc in (controller, worker):
            if proc.poll() is None:
                proc.kill()


def test_local_pool_workers_die_with_a_sigkilled_controller(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parents[1] / 'experiments')!r})
        from _jobs_helpers import sleep_and_record
        from medvl.experiments.executors import LocalProcessExecutor
        if __name__ == "__main__":
            ex = LocalProcessExecutor(1)
            ex.submit(sleep_and_record, ({str(pid_file)!r}, 120), name="long").result()
    """)
    script = tmp_path / "controller.py"
    script.write_text(code)
    controller = subprocess.Popen([sys.executable, str(script)])
    try:
        worker = int(_wait_file(pid_file))
        assert ProcessIdentity.of(worker).is_alive()
        os.kill(controller.pid, signal.SIGKILL)
        controller.wait()
        assert _gone(worker, 5), "a pool worker kept running after its controller was killed"
    finally:
        if controller.poll() is None:
            controller.kill()
