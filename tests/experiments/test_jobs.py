"""The job scheduler's ``on_end`` hook: sees every job's value or error and can stop further starts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the job functions live next to this file

from _jobs_helpers import add, fail

from medvl.experiments.executors import InlineExecutor
from medvl.experiments.jobs import Job, run_jobs


def test_on_end_sees_values_and_errors_and_can_stop_further_jobs(tmp_path: Path) -> None:
    jobs = [Job("one", add, (1, 2), tmp_path / "one"), Job("bad", fail, ("boom",), tmp_path / "bad"),
            Job("later", add, (3, 4), tmp_path / "later"), Job("never", add, (5, 6), tmp_path / "never")]
    seen: list[tuple[str, object, str | None]] = []

    def on_end(job: Job, value: object, error: BaseException | None) -> bool:
        seen.append((job.key, value, None if error is None else str(error)))
        return len(seen) < 3

    summary = run_jobs(jobs, InlineExecutor(), log=lambda _: None, on_end=on_end)
    assert seen == [("one", 3, None), ("bad", None, "boom"), ("later", 7, None)]
    assert summary.ran == ["one", "later"] and list(summary.failed) == ["bad"] and summary.not_started == ["never"]
    assert not (tmp_path / "never").exists()
