"""``medvl sweep``: run every cell of an experiment, resumably, on any executor.

A cell is finished when its ``cell_results.json`` exists (written atomically as the cell's
last act), so a sweep killed at any point continues on rerun: finished cells are skipped and
an interrupted cell's training resumes from its own last checkpoint. Cells whose stage starts
from another stage's weights wait for that cell. Cells run on the experiment's executor
(:mod:`medvl.experiments.executors`: in this process, local worker processes, submitit's local
executor or SLURM) with the resources the experiment asks for; each cell directory keeps the
job's state (:mod:`medvl.experiments.jobs`), which ``medvl sweep --status`` reads.

A rerun refuses a directory whose cells were trained with a different run config than the one
the experiment now resolves to (an edited stage config or ``set`` line), naming the cells and
keys, so a report never aggregates cells trained differently.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from medvl import __version__
from medvl.config.executor import ResourceSpec
from medvl.config.experiment import ExperimentConfig
from medvl.config.loading import ConfigError
from medvl.experiments.aggregate import CELL_RESULTS_FILE
from medvl.experiments.executors import Executor, Resources, build_executor
from medvl.experiments.grid import Cell, expand_cells, parent_cell
from medvl.experiments.jobs import Job, JobsSummary, job_status, run_jobs
from medvl.experiments.report import EXPERIMENT_FILE
from medvl.utils.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["CellRunner", "SweepSummary", "cell_is_finished", "check_cell_configs", "run_sweep", "sweep_status"]

#: ``runner(config, cell, sweep_dir, experiment_dir)`` trains and evaluates one cell and writes
#: ``sweep_dir/cell.relpath/cell_results.json``. It must be a picklable top-level function.
CellRunner = Callable[[ExperimentConfig, Cell, Path, Path], None]
#: Experiment keys that say where and how fast cells run, not what they compute: they may change between reruns.
PLACEMENT_KEYS = ("jobs", "executor", "resources")
STATUS_FILE = "sweep_status.json"


#: What a sweep did (ran, skipped, failed with errors, re-attached, seconds).
SweepSummary = JobsSummary


def cell_is_finished(sweep_dir: Path, cell: Cell) -> bool:
    """A cell is finished when its results file exists and names the same cell."""
    path = sweep_dir / cell.relpath / CELL_RESULTS_FILE
    if not path.is_file():
        return False
    try:
        return bool(read_json(path).get("cell") == cell.as_dict())
    except (OSError, ValueError):
        return False


def _without_placement(data: dict[str, Any]) -> dict[str, Any]:
    stages = [{k: v for k, v in stage.items() if k != "resources"} for stage in data.get("stages", [])]
    return {**{k: v for k, v in data.items() if k not in PLACEMENT_KEYS}, "stages": stages}


def _check_experiment(config: ExperimentConfig, sweep_dir: Path) -> None:
    """Refuse to mix a different experiment into the directory (placement settings may change)."""
    path = sweep_dir / EXPERIMENT_FILE
    if path.is_file():
        existing = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if _without_placement(existing) != _without_placement(config.model_dump(mode="json")):
            raise ConfigError(
                f"{sweep_dir} holds a different experiment ({path} differs from this config); "
                "use another output directory or --overwrite"
            )


def _save_experiment(config: ExperimentConfig, sweep_dir: Path) -> None:
    atomic_write_text(sweep_dir / EXPERIMENT_FILE,
                      yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


def _recorded_config(cell_dir: Path) -> tuple[dict[str, Any] | None, bool]:
    """The run config a cell was trained with and whether the cell finished."""
    from medvl.experiments.cell import RUN_SUBDIR

    results = cell_dir / CELL_RESULTS_FILE
    if results.is_file():
        try:
            recorded = read_json(results).get("provenance", {}).get("run_config")
        except (OSError, ValueError):
            recorded = None
        if isinstance(recorded, dict):
            return recorded, True
    saved = cell_dir / RUN_SUBDIR / "config.yaml"
    if saved.is_file():
        loaded = yaml.safe_load(saved.read_text(encoding="utf-8"))
        return (loaded if isinstance(loaded, dict) else None), False
    return None, False


def check_cell_configs(config: ExperimentConfig, sweep_dir: Path, experiment_dir: Path,
                       cells: list[Cell] | None = None) -> None:
    """Refuse when a started or finished cell was trained with another run config than it resolves to now.

    Finished cells must match exactly; an unfinished cell may differ in the keys ``--resume``
    accepts (``training.epochs``, logging, …) since it continues with the new values.
    """
    from medvl.experiments.cell import resolve_cell_config
    from medvl.training.run import RESUME_MUTABLE_KEYS, _flatten

    problems: list[str] = []
    for cell in cells if cells is not None else expand_cells(config):
        recorded, finished = _recorded_config(sweep_dir / cell.relpath)
        if recorded is None:
            continue
        current = resolve_cell_config(config, cell, sweep_dir, experiment_dir).model_dump(mode="json")
        old, new = _flatten(recorded), _flatten(current)
        changed = sorted(
            key for key in set(old) | set(new) if old.get(key) != new.get(key)
            and (finished or not any(key == m or key.startswith(m + ".") for m in RESUME_MUTABLE_KEYS))
        )
        if changed:
            shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
            more = f" (+{len(changed) - 5} more)" if len(changed) > 5 else ""
            problems.append(f"{cell.key} ({'finished' if finished else 'started'}): {shown}{more}")
    if problems:
        raise ConfigError(
            f"{sweep_dir}: {len(problems)} cell(s) were trained with a different run config than the experiment "
            f"now gives them (a stage config or `set` line changed), and a report would mix them:\n  "
            + "\n  ".join(problems[:20])
            + "\nRevert the change, use another output directory, or --overwrite to start again"
        )


def _cell_resources(config: ExperimentConfig, cell: Cell, experiment_dir: Path) -> Resources:
    """The stage's resources over the experiment's; one task per device of the cell's run config."""
    from medvl.experiments.cell import cell_config_dict

    stage = next(s for s in config.stages if s.name == cell.stage)
    spec: ResourceSpec = config.resources.merged(stage.resources)
    try:
        training = cell_config_dict(config, cell, experiment_dir).get("training") or {}
    except (ConfigError, ValueError, OSError):
        training = {}
    devices = training.get("devices", 1)
    tasks = devices if isinstance(devices, int) and devices > 1 else 1
    return Resources.from_spec(spec, tasks_per_node=tasks, nodes=int(training.get("num_nodes", 1) or 1))


def run_sweep(
    config: ExperimentConfig,
    sweep_dir: str | os.PathLike[str],
    runner: CellRunner,
    experiment_dir: str | os.PathLike[str] = ".",
    jobs: int | None = None,
    log: Callable[[str], None] = print,
    fail_fast: bool = False,
    executor: Executor | None = None,
) -> SweepSummary:
    """Run every unfinished cell of ``config`` into ``sweep_dir``.

    ``experiment_dir`` is where relative stage config paths are resolved. ``executor`` defaults
    to the experiment's (``executor:``; ``jobs`` overrides the experiment's ``jobs``). A failing
    cell is recorded (with its error) and its dependants are not started; the others go on
    unless ``fail_fast``. The first cell of a fresh sweep runs alone: a frozen tower's feature
    cache that later cells share is then filled once, in that cell's order, whatever the timing.
    """
    root = Path(sweep_dir)
    exp_dir = Path(experiment_dir)
    _check_experiment(config, root)
    cells = expand_cells(config)
    finished = {cell: cell_is_finished(root, cell) for cell in cells}
    check_cell_configs(config, root, exp_dir, cells)
    root.mkdir(parents=True, exist_ok=True)
    _save_experiment(config, root)
    skipped = sum(finished.values())
    if skipped:
        log(f"{skipped} of {len(cells)} cells already finished; skipping them")
    job_list = []
    for cell in cells:
        parent = parent_cell(config, cell)
        job_list.append(Job(key=cell.key, fn=runner, args=(config, cell, root, exp_dir),
                            state_dir=root / cell.relpath, resources=_cell_resources(config, cell, exp_dir),
                            after=(parent.key,) if parent is not None else (), done=finished[cell]))
    own = executor is None
    active = executor if executor is not None else build_executor(
        config.executor, root, jobs=jobs if jobs is not None else config.jobs)
    try:
        result = run_jobs(job_list, active, log=log, fail_fast=fail_fast, first_alone=True,
                          poll_s=config.executor.poll_s)
    finally:
        if own:
            active.close()
    summary = result
    atomic_write_json(
        root / STATUS_FILE,
        {"medvl_version": __version__, "executor": active.kind, "ran": summary.ran, "skipped": summary.skipped,
         "reattached": summary.reattached, "failed": summary.failed, "seconds": summary.seconds},
    )
    return summary


def sweep_status(sweep_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per cell of the experiment stored in ``sweep_dir``: key, directory and job status.

    Status is ``finished``, ``running``, ``queued``, ``failed``, ``interrupted`` or ``pending``
    (see :func:`medvl.experiments.jobs.job_status`).
    """
    root = Path(sweep_dir)
    path = root / EXPERIMENT_FILE
    if not path.is_file():
        raise ConfigError(f"{root} is not a sweep directory (no {EXPERIMENT_FILE})")
    config = ExperimentConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    rows = []
    for cell in expand_cells(config):
        status = job_status(root / cell.relpath, cell_is_finished(root, cell))
        rows.append({"cell": cell.key, "dir": str(cell.relpath), **status})
    return rows

