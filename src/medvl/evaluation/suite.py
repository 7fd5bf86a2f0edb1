"""The evaluation suite: run the configured tasks on EmbeddingSets and write the result files.

:func:`evaluate_embeddings` runs retrieval / classification / zero-shot / probe on embeddings
that already exist (any model's); :func:`run_evaluation` is ``medvl evaluate``: load a model
through the front door (:func:`medvl.models.loading.load_model`), extract the split's
embeddings on the model's own preprocessing (cached), evaluate, and write ``results.json`` +
``metrics.csv`` + ``results.md`` with provenance (family, image preprocessing, tokenizer
settings, ``trust_remote_code``); or evaluate precomputed embeddings as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medvl import __version__
from medvl.config.evaluation import EvaluationConfig
from medvl.evaluation.classification import evaluate_embedding_heads, labelled_rows
from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError, load_embeddings
from medvl.evaluation.extraction import (
    EmbeddingModel,
    evaluation_dataset,
    extract_embeddings,
    preprocessing_record,
)
from medvl.evaluation.probe import PROBE_KINDS, evaluate_probe
from medvl.evaluation.retrieval import evaluate_retrieval
from medvl.evaluation.vqa import run_vqa
from medvl.evaluation.zeroshot import (
    PROTOTYPE_LOGITS_PREFIX,
    PromptSet,
    build_class_embeddings,
    builtin_prompt_sets,
    evaluate_zeroshot,
    load_class_map,
    load_prompts,
    mapped_prototype_scores,
)
from medvl.models.loading import ModelLoadError
from medvl.utils.devices import resolve_device

__all__ = ["EMBEDDINGS_SUBDIR", "EMBEDDING_TASKS", "embed_manifest_split", "embeddings_dir_name",
           "evaluate_embeddings", "run_evaluation",
           "save_embedding_sets"]

#: Tasks computed from an EmbeddingSet of the evaluated split (captioning and VQA need the model).
EMBEDDING_TASKS = ("retrieval", "classification", "zeroshot", "probe")


def _skipped(reason: str) -> dict[str, Any]:
    return {"metrics": {}, "options": {}, "info": {"skipped": reason}}


def _auto_prompts(emb: EmbeddingSet, task: str) -> tuple[PromptSet, str] | None:
    """The built-in prompt set that names every class of ``task``, preferring exact name matches."""
    classes = emb.task(task).classes
    best: tuple[int, str, PromptSet] | None = None
    for name in builtin_prompt_sets():
        prompts = load_prompts(name)
        if not prompts.auto_select:
            continue
        try:
            for c in classes:
                prompts.prompts_for(c)
        except ValueError:
            continue
        exact = sum(c in prompts.classes for c in classes)
        if best is None or exact > best[0]:
            best = (exact, name, prompts)
    return None if best is None else (best[2], best[1])


def _encode_fn(encoder: EmbeddingModel, batch_size: int) -> Any:
    def encode(texts: list[str]) -> np.ndarray:
        parts = [encoder.encode_texts(texts[i : i + batch_size])[0].detach().float().cpu().numpy()
                 for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    return encode


def _zeroshot(emb: EmbeddingSet, cfg: EvaluationConfig, encoder: EmbeddingModel | None) -> dict[str, Any]:
    zs = cfg.zeroshot
    results: dict[str, Any] = {"metrics": {}, "options": {"mode": zs.mode, "subsets": list(zs.subsets)}, "info": {}}
    names = list(zs.prompts) or [t for t in emb.task_names if emb.task(t).kind != "regression"]
    scale = zs.logit_scale if zs.logit_scale is not None else (emb.meta.get("logit_scale") or 100.0)
    for task in names:
        if task not in emb.labels:
            raise EmbeddingSetError(f"zeroshot.prompts names task {task!r}, which has no labels in this data")
        info_t = emb.task(task)
        class_emb = neg_emb = None
        used: dict[str, list[str]] = {}
        source = None
        if zs.mode != "prototypes":
            if encoder is None or not encoder.has_text:
                why = "bare embeddings" if encoder is None else "an image-only model"
                results["info"][task] = {"skipped": f"text prompts need a text encoder (this is {why})"}
                continue
            if task in zs.prompts:
                prompts, source = load_prompts(zs.prompts[task]), zs.prompts[task]
            else:
                found = _auto_prompts(emb, task)
                if found is None:
                    results["info"][task] = {"skipped": "no prompt file configured and no built-in set names every class"}
                    continue
                prompts, source = found
            encode = _encode_fn(encoder, cfg.batch_size)
            class_emb, used = build_class_embeddings(prompts, info_t.classes, encode,
                                                     fallback_to_class_name=zs.fallback_to_class_name)
            if zs.use_negative_prompts and info_t.kind == "multilabel" and prompts.negative_templates:
                neg_emb, neg_used = build_class_embeddings(prompts, info_t.classes, encode, negative=True,
                                                           fallback_to_class_name=zs.fallback_to_class_name)
                used = {c: used[c] + [f"[negative] {p}" for p in neg_used[c]] for c in used}
        scored = emb
        if zs.mode != "text" and task in zs.class_maps:
            scored, proto_used = _mapped_prototypes(emb, task, zs.class_maps[task], encoder)
            used = {**used, **{f"{c} [prototype]": v for c, v in proto_used.items()}}
        res = evaluate_zeroshot(scored, task, class_emb=class_emb, negative_emb=neg_emb, prompts_used=used, mode=zs.mode,
                                subsets=zs.subsets, logit_scale=float(scale), threshold=zs.threshold,
                                balanced_accuracy_over=cfg.balanced_accuracy_over)
        results["metrics"].update(res["metrics"])
        results["options"][task] = {**res["options"], "prompt_source": source}
        results["info"][task] = res["info"]
    return results


def _prototype_gram(encoder: EmbeddingModel | None, emb: EmbeddingSet, task: str) -> np.ndarray | None:
    """``P Pᵀ`` of the raw prototypes of ``task``: from the model's prototype head, else the embeddings' meta."""
    head = getattr(getattr(encoder, "model", None), "prototype", None)
    spec = getattr(getattr(getattr(encoder, "model", None), "config", None), "prototype", None)
    if head is not None and spec is not None and getattr(spec, "task", None) == task:
        weights = head.prototypes.detach().double().cpu().numpy()
        return np.asarray(weights @ weights.T)
    stored = (emb.meta.get("prototype_gram") or {}).get(task)
    return None if stored is None else np.asarray(stored, dtype=np.float64)


def _mapped_prototypes(emb: EmbeddingSet, task: str, map_source: str,
                       encoder: EmbeddingModel | None) -> tuple[EmbeddingSet, dict[str, list[str]]]:
    """``emb`` with ``logits["prototypes/<task>"]`` scored through a class map (see zeroshot.ClassMap)."""
    import dataclasses

    class_map = load_class_map(map_source)
    key = PROTOTYPE_LOGITS_PREFIX + class_map.source_task
    if key not in emb.logits:
        raise EmbeddingSetError(f"class map {class_map.source} reads prototype scores {key!r}; the model has "
                                f"prototype scores for {[k for k in emb.logits if k.startswith(PROTOTYPE_LOGITS_PREFIX)]}")
    source_classes = list(class_map.source_classes)
    if not source_classes and class_map.source_task in (emb.meta.get("tasks") or {}):
        source_classes = list(emb.task(class_map.source_task).classes)
    if not source_classes:
        raise EmbeddingSetError(f"{class_map.source}: the class names of the prototype task {class_map.source_task!r} "
                                "are unknown; list them under source_classes")
    scores, used = mapped_prototype_scores(emb.logits[key], source_classes, emb.task(task).classes, class_map,
                                           _prototype_gram(encoder, emb, class_map.source_task))
    logits = {**emb.logits, PROTOTYPE_LOGITS_PREFIX + task: scores.astype(np.float32)}
    return dataclasses.replace(emb, logits=logits), used


def _probe(emb: EmbeddingSet, cfg: EvaluationConfig, train: EmbeddingSet | None,
           val: EmbeddingSet | None) -> dict[str, Any]:
    """The linear probe of every eligible task (or of ``probe.tasks``), merged into one result.

    Metric names carry the task (``<task>/<K>shot/<metric>``); ``info.notes`` says which tasks
    were probed, how C was validated, and any shortfall or unconverged fits.
    """
    p = cfg.probe
    if p.tasks is not None:
        names = list(p.tasks)
        for name in names:
            if name not in emb.labels:
                raise EmbeddingSetError(f"probe.tasks names {name!r}, which has no labels in this data "
                                        f"(labelled tasks: {emb.task_names})")
    else:
        names = [t for t in emb.task_names if emb.task(t).kind in PROBE_KINDS]
    if not names:
        return _skipped("no multiclass, ordinal or multilabel task to probe")
    if train is None:
        return _skipped("the probe needs the train split's embeddings")
    kinds = ", ".join(f"{t} ({emb.task(t).kind})" for t in names)
    out: dict[str, Any] = {"metrics": {}, "summaries": {}, "options": {"tasks": names},
                           "info": {"tasks": names, "notes": [f"probed: {kinds}"]}}
    for name in names:
        v = None
        if p.c_mode == "search" and p.validation != "train_fraction":
            if val is not None and labelled_rows(val, name).any():
                v = val
            elif p.validation == "val_split":
                raise EmbeddingSetError(f"probe.validation is 'val_split' but the data has no labelled val records "
                                        f"for {name!r}; set probe.validation=auto or train_fraction")
            else:
                out["info"]["notes"].append(
                    f"{name}: no val split, so C is chosen on {p.val_fraction:.0%} of the train pool held out "
                    "(per seed, before the shots are drawn)")
        res = evaluate_probe(
            train, emb, name, val=v, shots=p.shots, seeds=p.seeds, features=p.features, normalize=p.normalize,
            c_mode=p.c_mode, c_grid=p.c_grid, refine_points=p.refine_points, c_fixed=p.c_fixed,
            val_fraction=p.val_fraction, class_balance=p.class_balance, max_iter=p.max_iter, tol=p.tol,
            solver_dtype=p.solver_dtype, warm_start=p.warm_start, balanced_accuracy_over=cfg.balanced_accuracy_over,
            progress=cfg.progress, device=cfg.device,
        )
        out["metrics"].update(res["metrics"])
        out["summaries"].update(res["summaries"])
        out["options"][name] = res["options"]
        out["info"][name] = res["info"]
        out["info"]["notes"].extend(res["info"]["notes"])
    return out


def evaluate_embeddings(
    emb: EmbeddingSet,
    cfg: EvaluationConfig,
    *,
    encoder: EmbeddingModel | None = None,
    train: EmbeddingSet | None = None,
    val: EmbeddingSet | None = None,
) -> dict[str, Any]:
    """Every task of ``cfg.tasks`` on ``emb`` → ``{task: {"metrics", "options", "info"[, "summaries"]}}``.

    Zero-shot with text prompts needs ``encoder``; the probe needs ``train`` (and ``val`` for the
    C search on the val split). A task that cannot run says why under ``info.skipped``.
    """
    out: dict[str, Any] = {}
    r = cfg.retrieval
    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)})
    for task in cfg.tasks:
        if task == "retrieval":
            if emb.num_texts == 0:
                out[task] = _skipped("no captions in this split")
                continue
            out[task] = evaluate_retrieval(
                emb, ks=r.ks, directions=r.directions, normalize=r.normalize, label_tasks=r.label_tasks,
                precision_ks=r.precision_ks, multilabel_relevance=r.multilabel_relevance, exclude_own=r.exclude_own,
                max_chunk_bytes=r.max_chunk_mb * 1024**2, device=cfg.device,
            )
        elif task == "classification":
            heads = [t for t in emb.logits if t in emb.labels]
            wanted = cfg.classification.tasks if cfg.classification.tasks is not None else heads
            out[task] = (evaluate_embedding_heads(emb, wanted, threshold=cfg.classification.threshold,
                                                  balanced_accuracy_over=cfg.balanced_accuracy_over)
                         if wanted else _skipped("the model has no classifier heads for the labelled tasks"))
        elif task == "zeroshot":
            out[task] = _zeroshot(emb, cfg, encoder)
        elif task == "probe":
            out[task] = _probe(emb, cfg, train, val)
    return out


def _captioning(encoder: Any, manifest: Any, data_cfg: Any, cfg: EvaluationConfig) -> dict[str, Any]:
    """Generate texts for the evaluated split and score them (see :mod:`medvl.evaluation.captioning`)."""
    from medvl.data.dataset import select_split
    from medvl.evaluation.captioning import reference_texts, run_captioning

    model = getattr(encoder, "model", None)
    if model is None or getattr(model, "decoder", None) is None:
        return _skipped("the model has no captioning decoder (model.decoder)")
    subset = select_split(manifest, data_cfg, cfg.split)
    if len(subset) == 0:
        raise EmbeddingSetError(f"the {cfg.split!r} split is empty")
    o = cfg.captioning
    if o.reference_column is not None and o.reference_column not in subset.records.columns:
        raise EmbeddingSetError(f"captioning.reference_column {o.reference_column!r} is not a manifest column")
    ds = evaluation_dataset(encoder, subset, data_cfg)
    references = reference_texts(ds.manifest.records, o.reference_column, o.sections)
    multilabel = [t for t in ds.task_names if ds.manifest.task(t).kind == "multilabel"]
    labels = {t: ds.labels(t) for t in multilabel}
    classes = {t: list(ds.manifest.task(t).classes) for t in multilabel}
    return run_captioning(model, ds, references, o, labels=labels, classes=classes)


def _data_config(manifest_path: Path, checkpoint: Path | None, overrides: dict[str, Any]) -> Any:
    """The run's data settings (transforms, channels, tasks) when evaluating a run, else defaults;
    then ``evaluation.data`` overrides."""
    import yaml

    from medvl.config.data import DataConfig
    from medvl.config.loading import config_from_dict

    data: dict[str, Any] = {}
    source = "evaluation.data"
    if checkpoint is not None and (checkpoint / "config.yaml").is_file():
        saved = yaml.safe_load((checkpoint / "config.yaml").read_text(encoding="utf-8")) or {}
        data = dict(saved.get("data") or {})
        data["root"] = None
        data["fold"] = None
        source = f"{checkpoint / 'config.yaml'} (data section) + evaluation.data"
    data.update(overrides)
    data["manifest"] = str(manifest_path)
    return config_from_dict(data, DataConfig, source=source)


EMBEDDINGS_SUBDIR = "embeddings"


def embeddings_dir_name(model_name: str, split: str) -> str:
    """``<model>-<split>``: the folder under ``<out>/embeddings/`` holding that split's EmbeddingSet."""
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name).strip("._") or "model"
    return f"{slug}-{split}"


def save_embedding_sets(out_dir: str | os.PathLike[str], model_name: str,
                        sets: dict[str, EmbeddingSet | None]) -> dict[str, str]:
    """Save each extracted split as ``<out>/embeddings/<model>-<split>/`` (ready for ``medvl align``);
    returns ``{split: path relative to out_dir}``."""
    saved: dict[str, str] = {}
    for split, emb in sets.items():
        if emb is not None and split not in saved:
            rel = Path(EMBEDDINGS_SUBDIR) / embeddings_dir_name(model_name, split)
            emb.save(Path(out_dir) / rel)
            saved[split] = rel.as_posix()
    return saved


def _model_spec(model: Any, checkpoint: Any, hf_model: Any, embeddings: Any) -> tuple[str, Path]:
    given = [(k, v) for k, v in (("model", model), ("checkpoint", checkpoint), ("hf_model", hf_model),
                                 ("embeddings", embeddings)) if v is not None]
    if len(given) != 1:
        raise ModelLoadError("give exactly one of a model (--model; --checkpoint/--hf-model are aliases) "
                             f"or precomputed embeddings (--embeddings); got {[k for k, _ in given] or 'none'}")
    return given[0][0], Path(str(given[0][1]))


def embed_manifest_split(
    encoder: EmbeddingModel,
    manifest: str | os.PathLike[str],
    part: str,
    cfg: EvaluationConfig,
    *,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    loaded: tuple[Any, Any] | None = None,
    datasets: dict[str, Any] | None = None,
) -> EmbeddingSet:
    """The :class:`EmbeddingSet` of split ``part`` of ``manifest`` under ``encoder`` (cached in ``cache_dir``).

    Images get the model family's own preprocessing (:func:`evaluation_dataset`); the data settings
    are those of the medvl run ``run_dir`` (or the defaults) with ``cfg.data`` on top. ``loaded`` =
    (manifest, data config) when the caller has them; ``datasets[part]`` receives the dataset used.
    """
    from medvl.data.dataset import select_split
    from medvl.data.manifest import read_manifest

    if loaded is None:
        data_cfg = _data_config(Path(manifest), Path(run_dir) if run_dir is not None else None, cfg.data)
        m = read_manifest(manifest, root=root)
    else:
        m, data_cfg = loaded
    manifest_hash = m.hash()
    subset = select_split(m, data_cfg, part)  # type: ignore[arg-type]
    if len(subset) == 0:
        raise EmbeddingSetError(f"the {part!r} split of {manifest} is empty")
    ds = evaluation_dataset(encoder, subset, data_cfg)
    if datasets is not None:
        datasets[part] = ds
    ident = {"manifest_hash": manifest_hash, "split": part, "ids": ds.ids}
    return extract_embeddings(encoder, ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                              progress=cfg.progress, cache_dir=cache_dir, data_identity=ident,
                              file_fingerprint=data_cfg.file_fingerprint,
                              meta={"manifest": str(manifest), "manifest_hash": manifest_hash, "split": part})


def run_evaluation(
    cfg: EvaluationConfig,
    *,
    manifest: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str],
    model: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    hf_model: str | os.PathLike[str] | None = None,
    embeddings: str | os.PathLike[str] | None = None,
    which: str = "best",
    root: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """``medvl evaluate``: load, extract (cached), evaluate, write results; returns the results dict.

    The model is any spec of :func:`medvl.models.loading.load_model` (``checkpoint``/``hf_model``
    are aliases of ``model``); precomputed ``embeddings`` (an EmbeddingSet directory or ``.npz``,
    also accepted as ``model``) are evaluated as they are, without a manifest.
    """
    from medvl.models.loading import detect_format

    kind, spec = _model_spec(model, checkpoint, hf_model, embeddings)
    if kind == "embeddings" or detect_format(spec).format == "embeddings":
        return _evaluate_precomputed(cfg, spec, out_dir)
    if manifest is None:
        raise ModelLoadError("evaluating a model needs the data: give a manifest (--data)")
    return _evaluate_model(cfg, spec, manifest=manifest, out_dir=out_dir, which=which, root=root,
                           trust_remote_code=trust_remote_code)


def _evaluate_precomputed(cfg: EvaluationConfig, path: Path, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    from medvl.evaluation.results import write_results

    emb = load_embeddings(path)
    tasks = evaluate_embeddings(emb, cfg)
    provenance = {
        "medvl_version": __version__,
        "embeddings_input": str(path),
        "model": emb.meta.get("model"),
        "model_name": path.stem if path.is_file() else path.name,
        "manifest_hash": emb.meta.get("manifest_hash"),
        "split": emb.meta.get("split"),
        "n_images": emb.num_images,
        "n_captions": emb.num_texts,
        "preprocessing": emb.meta.get("preprocessing"),
        "skipped_records": emb.meta.get("skipped"),
        "config": cfg.model_dump(mode="json"),
    }
    paths = write_results(out_dir, tasks, provenance)
    return {"tasks": tasks, "provenance": provenance, "paths": paths}


def _evaluate_model(cfg: EvaluationConfig, spec: Path, *, manifest: str | os.PathLike[str],
                    out_dir: str | os.PathLike[str], which: str, root: str | os.PathLike[str] | None,
                    trust_remote_code: bool) -> dict[str, Any]:

    from medvl.data.manifest import read_manifest
    from medvl.evaluation.results import write_results
    from medvl.models.loading import load_model

    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device)})
    encoder = load_model(spec, which=which, device=cfg.device, trust_remote_code=trust_remote_code)
    run_dir = spec if encoder.identity.get("format") == "medvl" else None
    data_cfg = _data_config(Path(manifest), run_dir, cfg.data)
    m = read_manifest(manifest, root=root)
    manifest_hash = m.hash()
    datasets: dict[str, Any] = {}

    def embed(part: str) -> EmbeddingSet:
        return embed_manifest_split(encoder, manifest, part, cfg, cache_dir=cfg.cache_dir, loaded=(m, data_cfg),
                                    datasets=datasets)

    embedding_tasks = [t for t in cfg.tasks if t in EMBEDDING_TASKS]
    tasks: dict[str, Any] = {}
    emb = train = val = None
    if embedding_tasks:
        emb = embed(cfg.split)
        if "probe" in cfg.tasks:
            train = embed("train")
            if cfg.probe.c_mode == "search" and cfg.probe.validation != "train_fraction":
                has_val = (m.records["split"].fillna("").astype(str) == data_cfg.val_split).any()
                val = embed("val") if has_val else None
        tasks = evaluate_embeddings(emb, cfg, encoder=encoder, train=train, val=val)
    if "captioning" in cfg.tasks:
        tasks["captioning"] = _captioning(encoder, m, data_cfg, cfg)
    if "vqa" in cfg.tasks:
        source = cfg.vqa.manifest if cfg.vqa.manifest is not None else Path(manifest)
        vqa_manifest = m if cfg.vqa.manifest is None else read_manifest(cfg.vqa.manifest, root=None)
        tasks["vqa"] = run_vqa(encoder, vqa_manifest, data_cfg, cfg.vqa, split=cfg.split, batch_size=cfg.batch_size,
                               progress=cfg.progress, source=str(source))
    tasks = {t: tasks[t] for t in cfg.tasks if t in tasks}
    ident = encoder.identity
    model_name = Path(str(ident.get("path", ""))).name
    saved = save_embedding_sets(out_dir, model_name, {cfg.split: emb, "train": train, "val": val})
    # captioning/VQA-only runs build their own datasets (same preprocessing); record it from a fresh one
    reference_ds = datasets.get(cfg.split) or evaluation_dataset(encoder, m.subset(np.zeros(len(m), bool)), data_cfg)
    preprocessing = preprocessing_record(encoder, reference_ds)
    provenance = {
        "medvl_version": __version__,
        "model": ident,
        "model_name": model_name,
        "family": preprocessing["family"],
        "trust_remote_code": bool(ident.get("trust_remote_code", False)),
        "preprocessing": preprocessing,
        "device": cfg.device,
        "embeddings": saved,
        "manifest": str(manifest),
        "manifest_hash": manifest_hash,
        "split": cfg.split,
        "n_images": emb.num_images if emb is not None else None,
        "n_captions": emb.num_texts if emb is not None else None,
        "seeds": cfg.probe.seeds if "probe" in cfg.tasks else [],
        "transform": repr(getattr(reference_ds, "transform", None)),
        "skipped_records": emb.meta.get("skipped") if emb is not None else None,
        "config": cfg.model_dump(mode="json"),
    }
    paths = write_results(out_dir, tasks, provenance)
    return {"tasks": tasks, "provenance": provenance, "paths": paths}
