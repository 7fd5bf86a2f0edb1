"""Training logs: per-step and per-epoch JSONL + CSV, optional TensorBoard, a progress bar.

Files (written by process 0 only) under ``RUN_DIR/logs``:

* ``steps.jsonl`` / ``steps.csv`` — one record per logged optimizer step: ``epoch``, ``step``
  (optimizer steps so far), ``lr``, ``train/<term>`` for every objective term, ``grad_norm``
  (when clipping), ``samples_per_s``;
* ``epochs.jsonl`` / ``epochs.csv`` — one record per epoch (epoch 0 = the baseline before any
  update): ``train/<term>`` means over the epoch and every validation metric (``val/...``);
* ``grad_probe.jsonl`` / ``.csv`` — gradient-balance probe records (per-term gradient norms and
  ratios), when the objective's probe is on.

JSONL is appended as it goes; the CSVs are regenerated atomically from it (columns are the
union of keys in first-seen order). On resume, records after the resumed position are dropped
so the logs match an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from medvl.utils.io import atomic_write_text, to_jsonable

__all__ = ["MetricsLogger", "ProgressBar", "read_jsonl"]


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a JSONL file (an absent file is empty)."""
    file = Path(path)
    if not file.is_file():
        return []
    records = []
    with file.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                records.append(json.loads(line))
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
            kept = [r for r in read_jsonl(path) if r.get(key, -1) <= limit]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._write_csvs()

    def _append(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(to_jsonable(record)) + "\n")

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
