"""Files medvl writes: modes that honour the umask, and nothing torn or lost when the disk fills up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import write_config
from medvl.cli.main import main
from medvl.training.callbacks import Callback


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path: Path, shared_data: Path, umask: int, mode: int) -> None:
    """Collaborators on a shared server can read results when the umask says so (not always 0600)."""
    out, summary = tmp_path / "split.parquet", tmp_path / "summary.json"
    previous = os.umask(umask)
    try:
        for args in (["data", "split", str(shared_data), "--out", str(out), "--folds", "0"],
                     ["data", "check", str(out), "--no-verify-files", "--json", str(summary)]):
            with contextlib.suppress(SystemExit):
                main(args)
    finally:
        os.umask(previous)
    for path in (out, summary):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs (needs root and permission to mount; skipped otherwise)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full-disk test needs root to mount a small tmpfs")
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class FillDiskBeforeALogLineCrossesAPage(Callback):
    """Fills the disk completely right before the next ``steps.jsonl`` line must start a new page.

    tmpfs allocates whole pages: that line then fits only in part, which is how a full disk tears a
    line written with a plain buffered ``write``.
    """

    def __init__(self, disk: Path, run: Path) -> None:
        self.disk, self.log = disk, run / "logs" / "steps.jsonl"
        self.filled, self.epoch = False, 0

    def on_train_step_end(self, trainer: Any, record: Any) -> None:
        if self.filled or not self.log.is_file() or trainer.position.batch >= trainer.n_batches:
            return  # (an epoch end writes other files first)
        text = self.log.read_bytes()
        room = -len(text) % 4096  # bytes left in the file's last page
        if not 0 < room < len(text.splitlines()[-1]) - 20:
            return
        free = os.statvfs(self.disk)
        with (self.disk / "filler").open("wb") as handle:
            handle.write(b"\0" * (free.f_bavail * free.f_frsize))
        self.filled, self.epoch = True, int(record["epoch"])


@pytest.mark.slow
def test_full_disk_tears_no_log_line_and_resume_continues(small_disk: Path, shared_data: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The disk fills mid-epoch: the run stops with a clear error; after freeing space --resume completes."""
    from medvl.config.loading import load_config
    from medvl.config.training import RunConfig
    from medvl.training.run import run_training

    config = write_config(small_disk / "run.yaml", shared_data, epochs=20)
    run = small_disk / "run"
    fill = FillDiskBeforeALogLineCrossesAPage(small_disk, run)
    with pytest.raises(OSError, match=r"No space left|disk full"):
        run_training(load_config(config, RunConfig), run, callbacks=[fill])
    assert fill.filled
    for log in (run / "logs").glob("*.jsonl"):  # every line is whole
        text = log.read_text()
        assert not text or text.endswith("\n"), log
        [json.loads(line) for line in text.splitlines()]
    (small_disk / "filler").unlink()
    try:
        main(["train", str(config), "--out", str(run), "--resume", "--set", f"training.epochs={fill.epoch + 1}"])
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    result = json.loads((run / "training_result.json").read_text())
    assert result["status"] == "completed" and result["epochs_completed"] == fill.epoch + 1
    steps = [json.loads(line)["step"] for line in (run / "logs" / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))
