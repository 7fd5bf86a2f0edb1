"""One cell of a sweep: train (resumably), evaluate the test split at ``best`` and ``last``, record.

Cell directory::

    <sweep>/<stage>/lambda=<λ>/fold=<k>/seed=<s>/
      run/                 the training run (medvl.training.run layout; resumed if interrupted)
      cell_results.json    written last and atomically: the cell is finished when it exists

``cell_results.json`` holds the per-epoch trajectory (every ``train/*`` and ``val/*`` value the
trainer logged, epoch 0 being the evaluation before any update), the test metrics at the epoch
selected by the stage's selection metric and at the last epoch, and the gradient-probe records
with the ratio of the first two objective terms' gradient norms.

Test metrics come from :func:`medvl.evaluation.validation.validation_metrics` — the same function
the trainer's per-epoch validation uses — so test and validation numbers are named and computed
alike. Frozen text-tower features are shared between cells through ``<sweep>/.cache`` (guarded by a
fingerprint of the tower's weights).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import sys
from pathlib import Path
from typing import Any

from medvl import __version__
from medvl.config.experiment import ExperimentConfig, SelectionSpec, StageSpec
from medvl.config.loading import apply_overrides, config_from_dict, load_yaml, resolve_config_paths
from medvl.experiments.aggregate import CELL_RESULTS_FILE
from medvl.experiments.grid import Cell, parent_cell, substitute_placeholders
from medvl.training.callbacks import Callback, EpochSummary
from medvl.utils.io import atomic_write_json

__all__ = ["RUN_SUBDIR", "SharedFeatureCache", "cell_config_dict", "cell_output_mode", "resolve_cell_config",
           "run_cell"]

RUN_SUBDIR = "run"
CACHE_SUBDIR = ".cache"


def _stage(config: ExperimentConfig, name: str) -> StageSpec:
    return next(stage for stage in config.stages if stage.name == name)


def cell_config_dict(config: ExperimentConfig, cell: Cell, experiment_dir: Path) -> dict[str, Any]:
    """The raw (unvalidated) run config of ``cell``: stage config file and ``inline`` + placeholders.

    Without the wiring to other cells (``init_weights``) and the checkpoint monitor that
    :func:`resolve_cell_config` adds.
    """
    from medvl.config.training import RunConfig

    stage = _stage(config, cell.stage)
    data: dict[str, Any] = {}
    if stage.config is not None:
        path = stage.config if stage.config.is_absolute() else experiment_dir / stage.config
        data = resolve_config_paths(load_yaml(path), RunConfig, path.resolve().parent)
    if stage.inline is not None:
        data = apply_overrides(data, [])  # copy
        _merge(data, resolve_config_paths(stage.inline, RunConfig, Path(experiment_dir).resolve()))
    return apply_overrides(data, substitute_placeholders(stage.set, cell))


def resolve_cell_config(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> Any:
    """The :class:`~medvl.config.training.RunConfig` of ``cell``: stage config + placeholders + wiring.

    Wiring added on top of the stage's ``set``: ``training.init_weights`` (the parent cell's run
    when the stage has ``init_from``) and the checkpoint monitor (the stage's selection metric, so
    ``best`` is the epoch of peak validation retrieval in a tuning stage).
    """
    from medvl.config.training import RunConfig

    stage = _stage(config, cell.stage)
    source = f"stage {stage.name!r}"
    if stage.config is not None:
        source = str(stage.config if stage.config.is_absolute() else experiment_dir / stage.config)
    data = cell_config_dict(config, cell, experiment_dir)
    selection = stage.selection or config.selection
    overrides = [f"training.checkpoint.monitor={selection.metric}", f"training.checkpoint.mode={selection.mode}"]
    parent = parent_cell(config, cell)
    if parent is not None:
        run = sweep_dir / parent.relpath / RUN_SUBDIR
        if stage.init_checkpoint == "last":
            from medvl.training.checkpoint import resolve_checkpoint

            overrides.append(f"training.init_weights={resolve_checkpoint(run, 'last') / 'model.safetensors'}")
        else:
            overrides.append(f"training.init_weights={run}")
    return config_from_dict(apply_overrides(data, overrides), RunConfig, f"{source} for cell {cell.key}")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


class SharedFeatureCache(Callback):
    """Loads a frozen text tower's cached features before training and saves them after.

    The file is named by the tower's weight fingerprint, so cells whose text tower differs never
    share features.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def _target(self, model: Any) -> tuple[Any, Path] | None:
        from medvl.models.caching import module_fingerprint

        cache = getattr(model, "text_cache", None)
        if cache is None:
            return None
        fingerprint = module_fingerprint(model.text)
        return cache, self.cache_dir / f"text-{fingerprint[:16]}.safetensors"

    def attach(self, model: Any) -> None:
        """Load the shared features into ``model``'s text cache (no-op without a cache)."""
        from medvl.models.caching import module_fingerprint

        found = self._target(model)
        if found is not None:
            found[0].load(found[1], module_fingerprint(model.text))

    def store(self, model: Any) -> None:
        """Save ``model``'s text cache for the next cells."""
        from medvl.models.caching import module_fingerprint

        found = self._target(model)
        if found is not None and len(found[0]):
            found[0].save(found[1], module_fingerprint(model.text))

    def on_fit_start(self, trainer: Any) -> None:
        self.attach(_unwrap(trainer.model))

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        self.store(_unwrap(trainer.model))


class SelectionMetricCheck(Callback):
    """Fails at the first validation (epoch 0) when the selection metric is not logged.

    Without it a misspelt metric would silently leave the run without a ``best`` checkpoint.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_epoch_end(self, trainer: Any, record: Any) -> None:
        logged = [k for k in record if k.startswith("val/")]
        if logged and self.metric not in record:
            raise ValueError(
                f"selection metric {self.metric!r} is not among the validation metrics: {', '.join(sorted(logged))}"
            )


def cell_output_mode(cell: Cell) -> tuple[bool, str]:
    """``(progress_bars, line_prefix)`` for a cell's terminal output.

    A cell running in a worker process (``medvl sweep --jobs N``, any executor) shares the
    terminal with other cells: its per-batch tqdm bars would overwrite each other on one line, so
    they are off and every per-epoch summary line starts with ``[<cell key>]``. A cell run by the
    main process keeps its bar when stderr is a terminal (not in log files) and indents its lines.
    """
    if multiprocessing.parent_process() is not None:
        return False, f"[{cell.key}] "
    return sys.stderr.isatty(), "  "


def _unwrap(model: Any) -> Any:
    """The DualEncoder inside Fabric/DDP wrappers."""
    for attr in ("module", "_forward_module"):
        inner = getattr(model, attr, None)
        if inner is not None and inner is not model:
            return _unwrap(inner)
    return model


def _global_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _grad_probe_records(run_dir: Path, term_names: list[str]) -> list[dict[str, Any]]:
    from medvl.training.logging import read_jsonl

    path = run_dir / "logs" / "grad_probe.jsonl"
    records = read_jsonl(path) if path.is_file() else []
    out = []
    for record in records:
        entry = dict(record)
        for a, b in itertools.permutations(term_names[:2], 2):
            va, vb = entry.get(a), entry.get(b)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb > 0 and a == term_names[0]:
                entry[f"ratio/{a}/{b}"] = float(va) / float(vb)
        out.append(entry)
    return out


def _selected_epoch(history: list[dict[str, Any]], selection: SelectionSpec) -> int | None:
    values = [(h["epoch"], h.get(selection.metric)) for h in history]
    valid = [(e, v) for e, v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not valid:
        return None
    sign = 1.0 if selection.mode == "max" else -1.0
    return max(valid, key=lambda ev: (sign * ev[1], -ev[0]))[0]  # ties: the earliest epoch


def _full_evaluation(config: ExperimentConfig, run_cfg: Any, run_dir: Path, cell_dir: Path,
                     which: str) -> dict[str, float]:
    """``medvl evaluate`` of the cell's ``which`` checkpoint with ``config.evaluation``; flat ``task/metric``."""
    from medvl.evaluation.suite import run_evaluation

    assert config.evaluation is not None
    result = run_evaluation(config.evaluation.model_copy(update={"progress": False}), manifest=run_cfg.data.manifest,
                            out_dir=cell_dir / "evaluation", checkpoint=run_dir, which=which, root=run_cfg.data.root)
    flat: dict[str, float] = {}
    for task, res in result["tasks"].items():
        for name, value in (res.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                flat[f"{task}/{name}"] = float(value)
    return flat


def run_cell(config: ExperimentConfig, cell: Cell, sweep_dir: Path, experiment_dir: Path) -> None:
    """Train and evaluate one cell (a :data:`~medvl.experiments.sweep.CellRunner`)."""
    from medvl.data.dataset import ImageTextDataset, select_split
    from medvl.data.manifest import read_manifest
    from medvl.evaluation.validation import build_validation_hooks, validation_metrics
    from medvl.models.loading import load_trained_model
    from medvl.training.logging import read_jsonl
    from medvl.training.run import run_training
    from medvl.utils.io import read_json

    run_cfg = resolve_cell_config(config, cell, sweep_dir, experiment_dir)
    cell_dir = sweep_dir / cell.relpath
    run_dir = cell_dir / RUN_SUBDIR
    shared = SharedFeatureCache(sweep_dir / CACHE_SUBDIR)
    selection = _stage(config, cell.stage).selection or config.selection
    shown = [selection.metric, f"val/{config.classification_metric}", f"val/{config.retrieval_metric}"]
    bars, prefix = cell_output_mode(cell)
    if not bars:
        run_cfg.training.logging.progress_bar = False  # training.logging may differ on resume
    checks = [shared, SelectionMetricCheck(selection.metric), EpochSummary(shown, prefix=prefix)]
    result = run_training(run_cfg, run_dir, resume=True, callbacks=checks, hook_factory=build_validation_hooks)
    if _global_rank() != 0:  # a multi-process cell: process 0 evaluates the test split and records
        return
    if result.status == "non_finite_loss":
        raise RuntimeError(f"cell {cell.key}: {result.message}")
    history = read_jsonl(run_dir / "logs" / "epochs.jsonl")
    training = read_json(run_dir / "training_result.json")

    manifest = read_manifest(run_cfg.data.manifest, root=run_cfg.data.root)
    test_manifest = select_split(manifest, run_cfg.data, "test")
    test: dict[str, Any] = {}
    if len(test_manifest):
        test_set = ImageTextDataset.from_config(test_manifest, run_cfg.data, train=False, seed=run_cfg.seed)
        best = training.get("best") or {}
        epochs = {"best": best.get("epoch"), "last": result.epochs_completed}
        for which in ("best", "last"):
            if which == "best" and not best:
                continue
            model = load_trained_model(run_dir, which=which)
            shared.attach(model)
            metrics = validation_metrics(model, run_cfg.evaluation, dataset=test_set)
            test[which] = {"epoch": epochs[which], "metrics": metrics}
            shared.store(model)
        if config.evaluation is not None:
            which = "best" if "best" in test else "last"
            test[which]["metrics"].update(_full_evaluation(config, run_cfg, run_dir, cell_dir, which))
    term_names = [term.name for term in run_cfg.objective.terms]
    atomic_write_json(
        cell_dir / CELL_RESULTS_FILE,
        {
            "cell": cell.as_dict(),
            "status": result.status,
            "selection": {**selection.model_dump(), "epoch_by_history": _selected_epoch(history, selection)},
            "trajectory": history,
            "test": test,
            "n_test": len(test_manifest),
            "grad_probe": _grad_probe_records(run_dir, term_names),
            "provenance": {
                "medvl_version": __version__,
                "run_config": run_cfg.model_dump(mode="json"),
                "manifest_hash": manifest.hash(),
                "training": {k: training.get(k) for k in ("status", "epochs_completed", "global_step", "best")},
            },
        },
    )
