"""``medvl benchmark``: many models × many datasets × every task, resumable, one results file per run.

A *run* is (model, dataset, task). Its result is ``<out>/results/<dataset>_<model>_<task>.json``
(CLIP_benchmark's file-name order, ``{dataset}_{pretrained}_{model}_{language}_{task}``, without
the parts medvl has no use for), written atomically as the run's last act, so the file's
existence — with the same fingerprint (model entry, dataset entry, task, resolved evaluation
config) — marks the run finished: a rerun after a kill recomputes nothing finished. The JSON
holds CLIP_benchmark's keys (``dataset``, ``model``, ``pretrained``, ``task`` with its task
names, ``metrics``, ``language``) and medvl's (``medvl_task``, ``summaries``, ``options``,
``info``, ``provenance``). A run that cannot apply (zero-shot for image-only embeddings, a
dataset without captions for retrieval) is written as finished with ``skipped``: the reason. A
missing exported-embeddings split is an error before anything is written, or with
``on_missing_embeddings: skip`` such a skipped run; every skipped run is counted in the summary.
Relative paths in the config are resolved by :mod:`medvl.experiments.benchmark_paths`.

Work is scheduled per (model, dataset) *unit*: the model is loaded and each split's embeddings
extracted once (cached under ``<out>/cache``), then the unit's unfinished tasks run one after
another, each writing its file. Each unit is one job of the benchmark's executor (``executor:``:
this process, local worker processes, submitit's local executor or SLURM, with ``resources:``
per unit), scheduled by :mod:`medvl.experiments.jobs` like a sweep's cells; ``<out>/units/``
keeps each unit's job state.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medvl import __version__
from medvl.config.benchmark import BENCHMARK_TASKS, BenchmarkConfig, DatasetEntry, ModelEntry
from medvl.config.evaluation import EvaluationConfig
from medvl.config.loading import config_from_dict
from medvl.experiments.benchmark_paths import (
    check_model_specs,
    exported_path,
    exported_present,
    exported_sources,
    missing_embeddings_message,
    needed_splits,
    resolve_benchmark_paths,
    source_fingerprint,
)
from medvl.experiments.executors import Resources, build_executor
from medvl.experiments.jobs import Job, run_jobs
from medvl.utils.errors import UserInputError
from medvl.utils.hashing import hash_object
from medvl.utils.io import atomic_write_json, atomic_write_text, read_json
from medvl.utils.resources import read_yaml_source

__all__ = [
    "CLIP_BENCHMARK_TASKS",
    "BenchmarkSummary",
    "Run",
    "Unit",
    "expand_units",
    "load_collection",
    "resolve_config",
    "result_path",
    "run_benchmark",
    "source_fingerprint",
]

#: medvl task → CLIP_benchmark's task name (``clip_benchmark/cli.py``); classification has none there.
CLIP_BENCHMARK_TASKS: dict[str, str] = {"retrieval": "zeroshot_retrieval", "zeroshot": "zeroshot_classification",
                                        "probe": "linear_probe", "classification": "classification"}
RESULTS_DIR = "results"
UNITS_DIR = "units"
CONFIG_FILE = "benchmark.yaml"


@dataclass(frozen=True)
class Run:
    """One (model, dataset, task) cell."""

    model: str
    dataset: str
    task: str
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.dataset}_{self.model}_{self.task}"


@dataclass(frozen=True)
class Unit:
    """The runs of one (model, dataset) pair, executed together (one model load, shared embeddings)."""

    model: ModelEntry
    dataset: DatasetEntry
    runs: tuple[Run, ...]
    eval_config: dict[str, Any]
    split: str
    on_missing_embeddings: str = "error"

    @property
    def key(self) -> str:
        return f"{self.dataset.name}_{self.model.name}"


@dataclass
class BenchmarkSummary:
    """What a benchmark invocation did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Runs already finished before this invocation (not recomputed)."""
    skipped_runs: dict[str, str] = field(default_factory=dict)
    """Every run of the benchmark recorded as skipped (this invocation or earlier), with its reason."""
    failed: dict[str, str] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    """Units left unstarted after a failure when ``keep_going`` is false."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def result_path(out_dir: str | os.PathLike[str], run: Run) -> Path:
    """Where a run's results JSON lives."""
    return Path(out_dir) / RESULTS_DIR / f"{run.key}.json"


# ------------------------------------------------------------------------------- collections


def load_collection(name: str) -> dict[str, Any]:
    """A shipped collection (``resources/collections/<name>.yaml``) or a YAML file path."""
    text, _ = read_yaml_source(name, "collections", what="collection", error=UserInputError)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise UserInputError(f"collection {name!r}: needs a 'datasets' list")
    return data


def resolve_config(cfg: BenchmarkConfig, base: str | os.PathLike[str]) -> BenchmarkConfig:
    """``cfg`` with every relative path joined to ``base`` (:func:`~medvl.experiments.benchmark_paths.resolve_benchmark_paths`)."""
    data = resolve_benchmark_paths(cfg.model_dump(mode="json"), base)
    return config_from_dict(data, BenchmarkConfig, source=f"benchmark config (paths relative to {base})")


def _expand_datasets(entries: list[DatasetEntry]) -> list[DatasetEntry]:
    """Collections become one entry per member manifest ``<data_dir>/<manifest>`` (paths already resolved)."""
    out: list[DatasetEntry] = []
    for entry in entries:
        if entry.collection is None:
            out.append(entry)
            continue
        data_dir = Path(str(entry.data_dir))
        collection = load_collection(entry.collection)
        missing = []
        for member in collection["datasets"]:
            manifest = data_dir / str(member["manifest"])
            if not manifest.is_file():
                missing.append(f"{manifest}  (prepare: {member.get('prepare', 'see the collection file')})")
                continue
            merged_eval = _deep_merge(dict(member.get("eval") or {}), entry.eval)
            out.append(DatasetEntry(name=str(member["name"]), manifest=str(manifest), tasks=entry.tasks or member.get("tasks"),
                                    eval=merged_eval))
        if missing:
            lines = "\n".join(f"  - {m}" for m in missing)
            raise UserInputError(f"collection {entry.collection!r}: missing manifests under {data_dir}:\n{lines}")
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise UserInputError(f"dataset names must be unique, got {names}")
    return out


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ------------------------------------------------------------------------------------ tasks


def auto_tasks(manifest: Any, split: str) -> list[str]:
    """The tasks a dataset supports, from its task kinds and splits (CLIP_benchmark's ``--task auto``).

    retrieval: the evaluated split has captions; zeroshot and classification: a class task exists;
    probe: a class task and a train split exist.
    """
    records = manifest.records
    in_split = records["split"].astype(str) == split
    tasks = []
    if "texts" in records.columns and any(len(t) for t in records.loc[in_split, "texts"]):
        tasks.append("retrieval")
    class_tasks = [t for t in manifest.tasks.values() if t.kind != "regression"]
    if class_tasks:
        tasks += ["zeroshot", "classification"]
        if (records["split"].astype(str) == "train").any():
            tasks.append("probe")
    return [t for t in BENCHMARK_TASKS if t in tasks]


def expand_units(cfg: BenchmarkConfig, base: Path) -> list[Unit]:
    """Every (model, dataset) unit with its runs; validates each run's evaluation config before anything runs.

    Relative paths (manifests, data_dir, model specs, embedding templates, eval files) are relative to
    ``base``. A missing exported-embeddings split a run needs is a :class:`UserInputError` listing
    every one (model, dataset, expected file), unless ``cfg.on_missing_embeddings`` is ``skip``.
    """
    from medvl.data.manifest import read_manifest

    cfg = resolve_config(cfg, base)
    datasets = _expand_datasets(cfg.datasets)
    models = cfg.models
    # a model directory's files are fingerprinted once, not once per dataset
    spec_sources = {m.name: {"spec": source_fingerprint(m.spec)} for m in models if m.spec is not None}
    units = []
    missing: list[str] = []
    for dataset in datasets:
        manifest_path = Path(str(dataset.manifest))
        if not manifest_path.is_file():
            raise UserInputError(f"dataset {dataset.name!r}: manifest {manifest_path} does not exist")
        requested = dataset.tasks or cfg.tasks
        tasks: list[str] = auto_tasks(read_manifest(manifest_path, root=dataset.root), cfg.split) if requested == "auto" else list(requested)
        for model in models:
            merged = _deep_merge(_deep_merge(dict(cfg.eval), dataset.eval), model.eval)
            merged["split"] = cfg.split
            if model.embeddings is not None:
                missing += [missing_embeddings_message(model.name, str(dataset.name), part, model.embeddings)
                            for part in needed_splits(tasks, cfg.split)
                            if not exported_present(model.embeddings, str(dataset.name), part)]
            sources = (spec_sources[model.name] if model.embeddings is None
                       else exported_sources(str(model.embeddings), str(dataset.name), cfg.split))
            runs = []
            for task in tasks:
                resolved = _eval_config(merged, task, f"{dataset.name} × {model.name} × {task}")
                # where a unit runs (resources) is not what it computes: it may change between reruns
                fingerprint = hash_object({"model": model.model_dump(mode="json", exclude={"resources"}),
                                           "dataset": dataset.model_dump(mode="json"),
                                           "task": task, "eval": resolved.model_dump(mode="json"),
                                           "sources": sources})[:16]
                runs.append(Run(model.name, str(dataset.name), task, fingerprint))
            units.append(Unit(model, dataset, tuple(runs), merged, cfg.split, cfg.on_missing_embeddings))
    check_model_specs(models)
    if missing and cfg.on_missing_embeddings == "error":
        lines = "\n".join(f"  - {m}" for m in missing)
        raise UserInputError(f"exported embeddings missing for {len(missing)} (model, dataset, split):\n{lines}\n"
                             "export them or fix the model's embeddings template (relative to the benchmark YAML's "
                             "directory), or set on_missing_embeddings: skip to record those runs as skipped")
    return units


def _eval_config(merged: dict[str, Any], task: str, where: str) -> EvaluationConfig:
    from medvl.utils.devices import resolve_device

    data = dict(merged)
    data["tasks"] = [task]
    data.setdefault("progress", False)
    cfg = config_from_dict(data, EvaluationConfig, source=f"benchmark eval ({where})")
    return cfg.model_copy(update={"device": resolve_device(cfg.device)})


def is_finished(out_dir: Path, run: Run) -> bool:
    """A run is finished when its results file exists with the same fingerprint."""
    path = result_path(out_dir, run)
    if not path.is_file():
        return False
    try:
        return bool(read_json(path).get("medvl", {}).get("fingerprint") == run.fingerprint)
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------- execution


def _open_model(entry: ModelEntry, device: str) -> Any:
    """The model behind ``entry.spec``, through the model front door (:func:`medvl.models.loading.load_model`)."""
    from medvl.models.loading import load_model

    return load_model(str(entry.spec), which=entry.which, device=device)


def _exported(entry: ModelEntry, dataset: str, split: str) -> Any | None:
    from medvl.evaluation.embeddings import EmbeddingSet

    template = str(entry.embeddings)
    return EmbeddingSet.load(exported_path(template, dataset, split)) if exported_present(template, dataset, split) else None


def _missing_exported(unit: Unit, task: str) -> str | None:
    """Why ``task`` of an exported-embeddings unit cannot run (a split it needs is missing), or ``None``."""
    if unit.model.embeddings is None:
        return None
    for part in needed_splits([task], unit.split):
        if not exported_present(unit.model.embeddings, str(unit.dataset.name), part):
            return missing_embeddings_message(unit.model.name, str(unit.dataset.name), part, unit.model.embeddings)
    return None


def _headline_provenance(unit: Unit, emb: Any, cfg: EvaluationConfig, identity: Any) -> dict[str, Any]:
    return {
        "medvl_version": __version__, "model": identity, "model_name": unit.model.name,
        "manifest": unit.dataset.manifest, "manifest_hash": emb.meta.get("manifest_hash"), "split": unit.split,
        "n_images": emb.num_images, "n_captions": emb.num_texts, "seeds": cfg.probe.seeds if "probe" in cfg.tasks else [],
        "skipped_records": emb.meta.get("skipped"), "config": cfg.model_dump(mode="json"),
    }


def run_unit(unit: Unit, out_dir: str, device: str = "cpu") -> dict[str, str]:
    """Run the unfinished runs of one unit; returns ``{run key: "ran" | "skipped" | error}``.

    Top-level and picklable: it is what worker processes execute.
    """
    from medvl.evaluation.results import clip_benchmark_name
    from medvl.evaluation.suite import embed_manifest_split, evaluate_embeddings

    out = Path(out_dir)
    status: dict[str, str] = {}
    pending = [r for r in unit.runs if not is_finished(out, r)]
    status.update({r.key: "skipped" for r in unit.runs if r not in pending})
    if not pending:
        return status
    encoder = None
    embeddings: dict[str, Any] = {}

    def split_embeddings(part: str) -> Any | None:
        if part not in embeddings:
            if unit.model.embeddings is not None:
                embeddings[part] = _exported(unit.model, str(unit.dataset.name), part)
            else:
                cfg = _eval_config(unit.eval_config, "retrieval", unit.key)
                assert encoder is not None
                run_dir = unit.model.spec if encoder.identity.get("format") == "medvl" else None
                embeddings[part] = embed_manifest_split(encoder, str(unit.dataset.manifest), part, cfg,
                                                        root=unit.dataset.root, cache_dir=out / "cache", run_dir=run_dir)
        return embeddings[part]

    for run in pending:
        cfg = _eval_config(unit.eval_config, run.task, run.key)
        try:
            if unit.model.spec is not None and encoder is None:
                encoder = _open_model(unit.model, cfg.device)
            absent = _missing_exported(unit, run.task)  # checked up front too; a job on another node re-checks
            if absent is not None and unit.on_missing_embeddings != "skip":
                raise UserInputError(absent)
            emb = None if absent is not None else split_embeddings(unit.split)
            if emb is None:
                result = {"metrics": {}, "options": {}, "info": {"skipped": absent or "no embeddings"}}
                provenance: dict[str, Any] = {"medvl_version": __version__, "model_name": unit.model.name}
            else:
                train = val = None
                if run.task == "probe":
                    train = split_embeddings("train")
                    if cfg.probe.c_mode == "search" and cfg.probe.validation != "train_fraction":
                        val = _optional_split(split_embeddings, "val")
                result = evaluate_embeddings(emb, cfg, encoder=encoder, train=train, val=val)[run.task]
                identity = encoder.identity if encoder is not None else {"kind": "embeddings",
                                                                         "path": str(unit.model.embeddings)}
                provenance = _headline_provenance(unit, emb, cfg, identity)
        except Exception as exc:  # recorded per run; the unit's other runs go on
            status[run.key] = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, UserInputError):
                status[run.key] += "\n" + traceback.format_exc(limit=4)
            continue
        metrics = dict(result.get("metrics") or {})
        document = {
            "dataset": unit.dataset.name,
            "model": unit.model.name,
            "pretrained": unit.model.spec or unit.model.embeddings,
            "task": CLIP_BENCHMARK_TASKS[run.task],
            "metrics": metrics,
            "language": "en",
            "clip_benchmark_metrics": {clip_benchmark_name(run.task, k): v for k, v in metrics.items()
                                       if clip_benchmark_name(run.task, k)},
            "medvl": {"task": run.task, "fingerprint": run.fingerprint, "summaries": result.get("summaries") or {},
                      "options": result.get("options") or {}, "info": result.get("info") or {},
                      "skipped": (result.get("info") or {}).get("skipped"), "provenance": provenance},
        }
        atomic_write_json(result_path(out, run), document)
        status[run.key] = "ran"
    return status


def _skipped_runs(out: Path, units: list[Unit]) -> dict[str, str]:
    """``{run key: reason}`` of the benchmark's finished runs recorded as skipped."""
    skipped = {}
    for unit in units:
        for run in unit.runs:
            if is_finished(out, run):
                reason = (read_json(result_path(out, run)).get("medvl") or {}).get("skipped")
                if reason:
                    skipped[run.key] = str(reason)
    return skipped


def _optional_split(get: Callable[[str], Any], part: str) -> Any | None:
    from medvl.evaluation.embeddings import EmbeddingSetError

    try:
        return get(part)
    except EmbeddingSetError:
        return None


def _unit_resources(cfg: BenchmarkConfig, unit: Unit) -> Resources:
    """The benchmark's ``resources`` with the model's own over them."""
    return Resources.from_spec(cfg.resources.merged(unit.model.resources))


def _unit_state_dir(out: Path, unit: Unit) -> Path:
    """Where a unit's job state (``job.json``, ``job_state.json``) is kept."""
    return out / UNITS_DIR / unit.key


def run_benchmark(
    cfg: BenchmarkConfig,
    out_dir: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] = ".",
    jobs: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> BenchmarkSummary:
    """Run every unfinished run of ``cfg`` into ``out_dir`` and rebuild the leaderboard.

    Relative paths in ``cfg`` are relative to ``base_dir`` (the benchmark YAML's directory; the
    command line resolves the YAML's paths against it and its own against the working directory
    before calling this). Everything is validated (configs of every run, manifests, model specs,
    exported embeddings) before ``out_dir`` is touched; ``overwrite`` then removes earlier results,
    otherwise finished runs are kept and skipped. Each (model, dataset) unit with unfinished runs is one job on ``cfg.executor``
    (:func:`medvl.experiments.executors.build_executor`; ``jobs`` overrides ``cfg.jobs`` as its
    capacity), scheduled by :func:`medvl.experiments.jobs.run_jobs`, which keeps each unit's job
    state under ``<out>/units/<unit>/``: a rerun after the controller was killed resubmits only
    units with unfinished runs (and re-attaches to SLURM jobs still queued or running). The
    output directory is locked (:func:`medvl.utils.rundir.locked_run_dir`) while this runs.
    """
    from medvl.experiments.leaderboard import write_leaderboard
    from medvl.utils.rundir import check_run_dir, locked_run_dir

    out = Path(out_dir)
    start = time.perf_counter()
    check_run_dir(out, overwrite=overwrite, resume=not overwrite)  # in use by a live benchmark? (writes nothing)
    cfg = resolve_config(cfg, base_dir)  # what benchmark.yaml records: absolute paths, readable from anywhere
    units = expand_units(cfg, Path(base_dir))  # validates configs and manifests before anything is written
    resources = {unit.key: _unit_resources(cfg, unit) for unit in units}
    with locked_run_dir(out, overwrite=overwrite, resume=not overwrite):
        summary = BenchmarkSummary()
        job_list = []
        for unit in units:
            done = [r.key for r in unit.runs if is_finished(out, r)]
            summary.skipped += done
            job_list.append(Job(key=unit.key, fn=run_unit, args=(unit, str(out)), state_dir=_unit_state_dir(out, unit),
                                resources=resources[unit.key], done=len(done) == len(unit.runs)))
        todo = sum(not job.done for job in job_list)
        total = sum(len(u.runs) for u in units)
        by_key = {unit.key: unit for unit in units}

        def record(job: Job, status: Any, error: BaseException | None) -> bool:
            unit = by_key[job.key]
            if error is not None:  # the job itself failed (worker died, SLURM job killed): its unfinished runs failed
                status = {r.key: f"{type(error).__name__}: {error}" for r in unit.runs if not is_finished(out, r)}
            for key, value in status.items():
                if value == "ran":
                    summary.ran.append(key)
                elif value != "skipped":
                    summary.failed[key] = value
                    log(f"[failed] {key}: {value.splitlines()[0]}")
            log(f"  {unit.key}: " + ", ".join(f"{r.task} {status.get(r.key, 'done').split(':')[0]}" for r in unit.runs))
            return cfg.keep_going or not summary.failed

        capacity = jobs or cfg.jobs
        # the executor first: one that cannot start (no SLURM client here) fails before results are written
        with build_executor(cfg.executor, out, jobs=max(1, min(capacity, todo))) as executor:
            (out / RESULTS_DIR).mkdir(exist_ok=True)
            atomic_write_text(out / CONFIG_FILE,
                              yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
            log(f"{total} runs ({len(cfg.models)} models × {len(units) // max(1, len(cfg.models))} datasets × tasks); "
                f"{len(summary.skipped)} already finished; {todo} of {len(units)} (model, dataset) units to run")
            scheduled = run_jobs(job_list, executor, log=log, poll_s=cfg.executor.poll_s, on_end=record)
        summary.skipped = sorted(set(summary.skipped) - set(summary.ran))
        summary.not_started = scheduled.not_started
        summary.skipped_runs = _skipped_runs(out, units)
        summary.seconds = time.perf_counter() - start
        atomic_write_json(out / "benchmark_status.json",
                          {"medvl_version": __version__, "executor": executor.kind, "ran": summary.ran,
                           "skipped": summary.skipped, "skipped_runs": summary.skipped_runs, "failed": summary.failed,
                           "reattached": scheduled.reattached, "not_started": summary.not_started,
                           "seconds": summary.seconds})
        write_leaderboard(out)
    return summary
