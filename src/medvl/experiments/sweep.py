"""``medvl sweep``: run every cell of an experiment, resumably.

A cell is finished when its ``cell_results.json`` exists (written atomically as the cell's
last act), so a sweep killed at any point continues on rerun: finished cells are skipped and
an interrupted cell's training resumes from its own last checkpoint. Cells whose stage starts
from another stage's weights wait for that cell. With ``jobs > 1`` independent cells run in
parallel worker processes (``spawn`` context, so each worker has its own torch state).
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medvl import __version__
from medvl.config.experiment import ExperimentConfig
from medvl.experiments.aggregate import CELL_RESULTS_FILE
from medvl.experiments.grid import Cell, expand_cells, parent_cell
from medvl.experiments.report import EXPERIMENT_FILE
from medvl.utils.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["CellRunner", "SweepSummary", "cell_is_finished", "run_sweep"]

#: ``runner(config, cell, sweep_dir, experiment_dir)`` trains and evaluates one cell and writes
#: ``sweep_dir/cell.relpath/cell_results.json``. It must be a picklable top-level function.
CellRunner = Callable[[ExperimentConfig, Cell, Path, Path], None]


@dataclass
class SweepSummary:
    """What a sweep did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no cell failed."""
        return not self.failed


def cell_is_finished(sweep_dir: Path, cell: Cell) -> bool:
    """A cell is finished when its results file exists and names the same cell."""
    path = sweep_dir / cell.relpath / CELL_RESULTS_FILE
    if not path.is_file():
        return False
    try:
        return bool(read_json(path).get("cell") == cell.as_dict())
    except (OSError, ValueError):
        return False


def _save_experiment(config: ExperimentConfig, sweep_dir: Path) -> None:
    """Store the resolved experiment config; refuse to mix a different experiment into the directory."""
    path = sweep_dir / EXPERIMENT_FILE
    resolved = config.model_dump(mode="json")
    if path.is_file():
        existing = yaml.safe_load(path.read_text(encoding="utf-8"))
        if existing != resolved:
            raise ValueError(
                f"{sweep_dir} holds a different experiment ({path} differs from this config); "
                "use another output directory or --overwrite"
            )
        return
    atomic_write_text(path, yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


def run_sweep(
    config: ExperimentConfig,
    sweep_dir: str | os.PathLike[str],
    runner: CellRunner,
    experiment_dir: str | os.PathLike[str] = ".",
    jobs: int | None = None,
    log: Callable[[str], None] = print,
    fail_fast: bool = False,
) -> SweepSummary:
    """Run every unfinished cell of ``config`` into ``sweep_dir``.

    ``experiment_dir`` is where relative stage config paths are resolved. A failing cell is
    recorded (with its error) and its dependants are not started; the others go on unless
    ``fail_fast``.
    """
    root = Path(sweep_dir)
    root.mkdir(parents=True, exist_ok=True)
    _save_experiment(config, root)
    start = time.perf_counter()
    summary = SweepSummary()
    cells = expand_cells(config)
    pending: list[Cell] = []
    for cell in cells:
        if cell_is_finished(root, cell):
            summary.skipped.append(cell.key)
        else:
            pending.append(cell)
    if summary.skipped:
        log(f"{len(summary.skipped)} of {len(cells)} cells already finished; skipping them")
    workers = jobs if jobs is not None else config.jobs
    exp_dir = Path(experiment_dir)
    done = {c for c in cells if c.key in set(summary.skipped)}
    blocked: set[Cell] = set()

    def ready(cell: Cell) -> bool:
        parent = parent_cell(config, cell)
        return parent is None or parent in done

    def parent_failed(cell: Cell) -> bool:
        parent = parent_cell(config, cell)
        return parent is not None and parent in blocked

    total = len(pending)
    if workers <= 1:
        for index, cell in enumerate(pending, 1):
            if parent_failed(cell):
                blocked.add(cell)
                summary.failed[cell.key] = "not run: the cell it starts from failed"
                continue
            log(f"[{index}/{total}] {cell.key}")
            try:
                runner(config, cell, root, exp_dir)
            except Exception as exc:  # recorded, reported, and re-raised with fail_fast
                blocked.add(cell)
                summary.failed[cell.key] = f"{type(exc).__name__}: {exc}"
                log(f"  failed: {summary.failed[cell.key]}")
                if fail_fast:
                    raise
                continue
            done.add(cell)
            summary.ran.append(cell.key)
    else:
        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // workers)  # the cores shared out, no oversubscription
        with futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_limit_threads, initargs=(threads,)
        ) as pool:
            running: dict[futures.Future[None], Cell] = {}
            queue = list(pending)
            while queue or running:
                # the first cell of a fresh sweep runs alone: what cells share through files (a frozen
                # tower's feature cache) is then computed once, in that cell's deterministic order,
                # instead of by whichever concurrent cell saves last, so results do not depend on timing
                capacity = workers if (done or summary.failed) else 1
                for cell in list(queue):
                    if parent_failed(cell):
                        queue.remove(cell)
                        blocked.add(cell)
                        summary.failed[cell.key] = "not run: the cell it starts from failed"
                    elif ready(cell) and len(running) < capacity:
                        queue.remove(cell)
                        log(f"[start] {cell.key}")
                        running[pool.submit(runner, config, cell, root, exp_dir)] = cell
                if not running:
                    break
                finished, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    error = future.exception()
                    if error is None:
                        done.add(cell)
                        summary.ran.append(cell.key)
                        log(f"[done] {cell.key}")
                    else:
                        blocked.add(cell)
                        summary.failed[cell.key] = f"{type(error).__name__}: {error}"
                        log(f"[failed] {cell.key}: {summary.failed[cell.key]}")
                        if fail_fast:
                            raise error
    summary.seconds = time.perf_counter() - start
    atomic_write_json(
        root / "sweep_status.json",
        {"medvl_version": __version__, "ran": summary.ran, "skipped": summary.skipped,
         "failed": summary.failed, "seconds": summary.seconds},
    )
    return summary


def _limit_threads(threads: int) -> None:
    """Worker initializer: each parallel cell gets its share of the CPU cores for torch and BLAS."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
