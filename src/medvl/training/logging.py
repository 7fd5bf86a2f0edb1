"""Training logs: per-step and per-epoch JSONL + CSV, optional TensorBoard, a progress bar.

Files (written by process 0 only) under ``RUN_DIR/logs``:

* ``steps.jsonl`` / ``steps.csv`` — one record per logged optimizer step: ``epoch``, ``step``
  (optimizer steps so far), ``lr``, ``train/<term>`` for every objective term, ``grad_norm``
  (when clipping), ``samples_per_s``;
* ``epochs.jsonl`` / ``epochs.csv`` — one record per epoch (epoch 0 = the baseline before any
  update): ``train/<term>`` means over the epoch and every validation metric (``val/...``);
* ``grad_probe.jsonl`` / ``.csv`` — gradient-balance probe records (per-term gradient norms and
  ratios), when the objective's probe is on.

JSONL is appended record by record with :func:`medvl.utils.io.append_line` (one write; a
failed write, e.g. on a full disk, is cut back so no torn line is left); the CSVs are regenerated
atomically from it (columns are the union of keys in first-seen order). On resume, records after
the resumed position are dropped so the logs match an uninterrupted run, and a torn last line
(left by a kill or a full disk under an older medvl or on a file system without atomic appends)
is dropped and reported in :attr:`MetricsLogger.repairs`. A corrupt line elsewhere is a
:class:`LogCorruptError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from medvl.utils.errors import UserInputError
from medvl.utils.io import append_line, atomic_write_text, to_jsonable

__all__ = ["LogCorruptError", "MetricsLogger", "ProgressBar", "read_jsonl"]


class LogCorruptError(UserInputError):
    """A JSONL log line (other than a torn last line) is not a JSON object; names the file and line."""


def read_jsonl(path: str | os.PathLike[str], repairs: list[str] | None = None) -> list[dict[str, Any]]:
    """Records of a JSONL file (an absent file is empty).

    A last line that is incomplete (no newline, or not valid JSON) is a torn write: with a
    ``repairs`` list it is dropped and described there, otherwise it is a :class:`LogCorruptError`,
    as is a bad line anywhere else.
    """
    file = Path(path)
    if not file.is_file():
        return []
    text = file.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    last_number = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last = number == last_number
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
            if last and not text.endswith("\n"):
                raise ValueError("no newline at the end (an interrupted write)")
        except ValueError as exc:
            if last and repairs is not None:
                repairs.append(f"{file}: dropped a torn last line {number} ({len(line.encode())} bytes: {exc})")
                break
            raise LogCorruptError(f"{file}: line {number} is not a complete JSON record ({exc})") from None
        records.append(record)
    return records


def _records_to_csv(records: list[dict[str, Any]]) -> str:
    columns: dict[str, None] = {}
    for record in records:
        for key in record:
            columns.setdefault(key, None)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return buffer.getvalue()


class MetricsLogger:
    """Writes step and epoch records; a no-op on processes other than 0."""

    def __init__(self, run_dir: str | os.PathLike[str], *, enabled: bool = True, tensorboard: bool = False) -> None:
        self.dir = Path(run_dir) / "logs"
        self.enabled = enabled
        #: what :meth:`truncate` repaired (torn last lines dropped), for the run's result file
        self.repairs: list[str] = []
        self._tb: Any = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError(
                    "training.logging.tensorboard is true but TensorBoard is not installed; "
                    "`pip install tensorboard` or set training.logging.tensorboard=false"
                ) from exc
            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    @property
    def steps_path(self) -> Path:
        return self.dir / "steps.jsonl"

    @property
    def epochs_path(self) -> Path:
        return self.dir / "epochs.jsonl"

    @property
    def probe_path(self) -> Path:
        return self.dir / "grad_probe.jsonl"

    def truncate(self, *, max_step: int, max_epoch: int) -> None:
        """Drop step records after ``max_step`` and epoch records after ``max_epoch`` (resume)."""
        if not self.enabled:
            return
        for path, key, limit in ((self.steps_path, "step", max_step), (self.epochs_path, "epoch", max_epoch),
                                 (self.probe_path, "step", max_step - 1)):
            if not path.is_file():
                continue
            kept = [r for r in read_jsonl(path, self.repairs) if r.get(key, -1) <= limit]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._write_csvs()

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        append_line(path, json.dumps(to_jsonable(record)))

    def log_step(self, record: dict[str, Any]) -> None:
        """Append one step record."""
        if not self.enabled:
            return
        self._append(self.steps_path, record)
        self._tensorboard(record, int(record.get("step", 0)))

    def log_probe(self, record: dict[str, Any]) -> None:
        """Append one gradient-balance probe record (``step`` = optimizer steps before it)."""
        if not self.enabled:
            return
        self._append(self.probe_path, record)
        self._tensorboard({f"grad_probe/{k}": v for k, v in record.items()}, int(record.get("step", 0)))

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append one epoch record and refresh both CSVs."""
        if not self.enabled:
            return
        self._append(self.epochs_path, record)
        self._tensorboard(record, int(record.get("step", record.get("epoch", 0))), prefix="epoch/")
        self._write_csvs()

    def _tensorboard(self, record: dict[str, Any], step: int, prefix: str = "") -> None:
        if self._tb is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch") \
                    and math.isfinite(float(value)):
                self._tb.add_scalar(prefix + key, float(value), step)

    def _write_csvs(self) -> None:
        for path in (self.steps_path, self.epochs_path, self.probe_path):
            if path.is_file():
                atomic_write_text(path.with_suffix(".csv"), _records_to_csv(read_jsonl(path)))

    def close(self) -> None:
        """Flush CSVs and TensorBoard."""
        if not self.enabled:
            return
        self._write_csvs()
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class ProgressBar:
    """A tqdm bar per epoch showing the loss and samples/s; silent when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, epoch: int, total: int, initial: int) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, initial=initial, desc=f"epoch {epoch}", unit="batch",
                         mininterval=0.5, leave=False, dynamic_ncols=True)

    def update(self, n: int, postfix: dict[str, float] | None = None) -> None:
        if self._bar is None:
            return
        self._bar.update(n)
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
