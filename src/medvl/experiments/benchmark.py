"""``medvl benchmark``: many models × many datasets × every task, resumable, one results file per run.

A *run* is (model, dataset, task). Its result is ``<out>/results/<dataset>_<model>_<task>.json``
(CLIP_benchmark's file-name order, ``{dataset}_{pretrained}_{model}_{language}_{task}``, without
the parts medvl has no use for), written atomically as the run's last act, so the file's
existence — with the same fingerprint (model entry, dataset entry, task, resolved evaluation
config) — marks the run finished: a rerun after a kill recomputes nothing finished. The JSON
holds CLIP_benchmark's keys (``dataset``, ``model``, ``pretrained``, ``task`` with its task
names, ``metrics``, ``language``) and medvl's (``medvl_task``, ``summaries``, ``options``,
``info``, ``provenance``). A run that cannot apply (zero-shot for image-only embeddings, a
dataset without captions for retrieval) is written as finished with ``skipped``: the reason.

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
    "result_path",
    "run_benchmark",
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

    @property
    def key(self) -> str:
        return f"{self.dataset.name}_{self.model.name}"


@dataclass
class BenchmarkSummary:
    """What a benchmark invocation did."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
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


def _expand_datasets(entries: list[DatasetEntry], base: Path) -> list[DatasetEntry]:
    """Collections become one entry per member manifest ``<data_dir>/<manifest>``; paths are made absolute."""
    out: list[DatasetEntry] = []
    for entry in entries:
        if entry.collection is None:
            manifest = Path(str(entry.manifest))
            out.append(entry.model_copy(update={"manifest": str(manifest if manifest.is_absolute() else base / manifest)}))
            continue
        data_dir = Path(str(entry.data_dir))
        data_dir = data_dir if data_dir.is_absolute() else base / data_dir
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


#: files whose change makes a finished run stale: weights of a model directory, an exported EmbeddingSet
_SOURCE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".npy")


def _resolve_models(entries: list[ModelEntry], base: Path) -> list[ModelEntry]:
    """Relative ``spec`` paths and ``embeddings`` templates are relative to ``base`` (the YAML's directory).

    A ``spec`` that names no existing path under ``base`` (an ``hf-hub:`` id, an open_clip
    built-in name, an absolute path) is left as written.
    """
    out = []
    for entry in entries:
        update: dict[str, str] = {}
        if entry.spec is not None and ":" not in entry.spec and not Path(entry.spec).is_absolute():
            candidate = base / entry.spec
            if candidate.exists():
                update["spec"] = str(candidate)
        if entry.embeddings is not None and not Path(entry.embeddings).is_absolute():
            update["embeddings"] = str(base / entry.embeddings)
        out.append(entry.model_copy(update=update) if update else entry)
    return out


def source_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """Size + mtime of a model's weight files or an EmbeddingSet's files (``None``: the path does not exist).

    Part of each run's fingerprint, so a retrained checkpoint or re-exported embeddings under the
    same path make the finished results stale (they are recomputed), and embeddings exported after
    a run was recorded as skipped are picked up by the rerun.
    """
    root = Path(path)
    if not root.exists():
        return None
    if root.is_file():
        files = [root]
    else:  # weights anywhere below (checkpoints/…), JSON at the top; not what `medvl evaluate` wrote inside (eval-*)
        files = sorted(f for f in root.rglob("*") if f.is_file()
                       and not f.relative_to(root).parts[0].startswith("eval-")
                       and (f.suffix in _SOURCE_SUFFIXES or (f.suffix == ".json" and f.parent == root)))
    tokens = []
    for file in files:
        info = file.stat()
        tokens.append(f"{file.relative_to(root) if file != root else file.name}:{info.st_size}:{info.st_mtime_ns}")
    return hash_object(tokens)[:16]


def _exported_sources(model: ModelEntry, dataset: str, split: str) -> dict[str, str | None]:
    """The exported splits the runs of (model, dataset) read, fingerprinted."""
    return {part: source_fingerprint(str(model.embeddings).format(dataset=dataset, split=part))
            for part in dict.fromkeys((split, "train", "val"))}


def expand_units(cfg: BenchmarkConfig, base: Path) -> list[Unit]:
    """Every (model, dataset) unit with its runs; validates each run's evaluation config before anything runs.

    Relative paths (manifests, data_dir, model specs, embedding templates) are relative to ``base``.
    """
    from medvl.data.manifest import read_manifest

    datasets = _expand_datasets(cfg.datasets, base)
    models = _resolve_models(cfg.models, base)
    # a model directory's files are fingerprinted once, not once per dataset
    spec_sources = {m.name: {"spec": source_fingerprint(m.spec)} for m in models if m.spec is not None}
    units = []
    for dataset in datasets:
        manifest_path = Path(str(dataset.manifest))
        if not manifest_path.is_file():
            raise UserInputError(f"dataset {dataset.name!r}: manifest {manifest_path} does not exist")
        requested = dataset.tasks or cfg.tasks
        tasks = auto_tasks(read_manifest(manifest_path, root=dataset.root), cfg.split) if requested == "auto" else list(requested)
        for model in models:
            merged = _deep_merge(_deep_merge(dict(cfg.eval), dataset.eval), model.eval)
            merged["split"] = cfg.split
            sources = (spec_sources[model.name] if model.embeddings is None
                       else _exported_sources(model, str(dataset.name), cfg.split))
            runs = []
            for task in tasks:
                resolved = _eval_config(merged, task, f"{dataset.name} × {model.name} × {task}")
                # where a unit runs (resources) is not what it computes: it may change between reruns
                fingerprint = hash_object({"model": model.model_dump(mode="json", exclude={"resources"}),
                                           "dataset": dataset.model_dump(mode="json"),
                                           "task": task, "eval": resolved.model_dump(mode="json"),
                                           "sources": sources})[:16]
                runs.append(Run(model.name, str(dataset.name), task, fingerprint))
            units.append(Unit(model, dataset, tuple(runs), merged, cfg.split))
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

    path = Path(str(entry.embeddings).format(dataset=dataset, split=split))
    return EmbeddingSet.load(path) if (path / "embeddings.json").is_file() else None


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
            emb = split_embeddings(unit.split)
            if emb is None:
                result = {"metrics": {}, "options": {}, "info": {"skipped": f"no exported embeddings for dataset "
                                                                            f"{unit.dataset.name!r}, split {unit.split!r}"}}
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

    Everything is validated (configs of every run, manifests) before ``out_dir`` is touched;
    ``overwrite`` then removes earlier results, otherwise finished runs are kept and skipped.
    Each (model, dataset) unit with unfinished runs is one job on ``cfg.executor``
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
        summary.seconds = time.perf_counter() - start
        atomic_write_json(out / "benchmark_status.json",
                          {"medvl_version": __version__, "executor": executor.kind, "ran": summary.ran,
                           "skipped": summary.skipped, "failed": summary.failed, "reattached": scheduled.reattached,
                           "not_started": summary.not_started, "seconds": summary.seconds})
        write_leaderboard(out)
    return summary
