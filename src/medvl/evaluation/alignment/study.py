"""Alignment studies: every metric and retrieval per (model × dataset), then how well each
metric predicts retrieval (the SAS paper's "retrieval predictivity") and how domains differ.

Pipeline of :func:`run_study` (config: :class:`medvl.config.alignment.AlignmentStudyConfig`):

1. per entry: load the EmbeddingSet (or extract it), pair one text per image
   (:func:`~medvl.evaluation.alignment.pairs.paired_embeddings`), compute the selected metrics,
   the SAS ``topq`` sweep, and retrieval over *all* captions (R@1/5/10 both ways, rSum);
2. correlations (Spearman, Kendall, Pearson) of every metric column with every retrieval
   target: within each dataset (across models), within each domain, and pooled — only entries
   whose ``group`` is in ``pooled_groups`` (the paper keeps its medical benchmark models out);
3. domain tests: mean ± std per domain with a two-sided Mann–Whitney U for every metric; a
   one-sample t-test (H0 μ = 0) of the SAS imbalance per domain and a one-sided MWU
   (medical > natural);
4. outputs: ``results.json`` (everything + provenance), ``entries.csv/.md``,
   ``correlations.csv/.md``, ``domain_tests.csv/.md``, ``sweep.csv/.md``, ``entries/*.json``
   (per-mode SAS details) and ``plots/``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medvl import __version__
from medvl.config.alignment import AlignmentMetricsConfig, AlignmentStudyConfig, ExtractSpec, StudyEntry
from medvl.evaluation.alignment.correlation import (
    correlate,
    domain_comparison,
    mann_whitney_greater,
    one_sample_t,
    significance_stars,
)
from medvl.evaluation.alignment.pairs import paired_embeddings
from medvl.evaluation.alignment.registry import (
    ALIGNMENT_METRICS,
    HIGHER_IS_BETTER,
    AlignmentOptions,
    compute_alignment_metrics,
    resolve_metric_names,
)
from medvl.evaluation.alignment.sas import sas_from_stats, spectral_stats
from medvl.evaluation.alignment.tables import fmt, markdown_table, write_csv
from medvl.utils.errors import UserInputError
from medvl.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "EntryEvaluation",
    "benchmark_rows",
    "check_study_inputs",
    "correlation_rows",
    "domain_test_rows",
    "evaluate_embedding_set",
    "imbalance_test_rows",
    "metric_options",
    "retrieval_targets",
    "run_study",
]


class StudyError(UserInputError, ValueError):
    """A study cannot run as configured; the message names the entry or key."""


def metric_options(cfg: AlignmentMetricsConfig) -> AlignmentOptions:
    """:class:`AlignmentOptions` from the config section (memory budget GB → bytes)."""
    return AlignmentOptions(
        topq=cfg.topq,
        eps=cfg.eps,
        knn_k=cfg.knn_k,
        svcca_dims=cfg.svcca_dims,
        mmd_sigma=cfg.mmd_sigma,
        rbf_threshold=cfg.rbf_threshold,
        median_max_rows=cfg.median_max_rows,
        seed=cfg.seed,
        memory_budget=int(cfg.memory_budget_gb * 1024**3),
    )


def retrieval_targets(emb: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K both ways as fractions in [0, 1] (``r{k}_it``, ``r{k}_ti``), as everywhere in medvl; rSum on the
    retrieval literature's percentage scale: ``rsum_it``/``rsum_ti`` = 100·Σ_k R@K, ``rsum`` = both (max 600
    for K = 1, 5, 10).

    Uses :func:`medvl.evaluation.retrieval.evaluate_retrieval` (cosine, every caption, explicit
    caption→image map, so images with ≠ 5 captions are handled correctly).
    """
    from medvl.evaluation.retrieval import evaluate_retrieval

    res = evaluate_retrieval(emb, ks=tuple(ks))["metrics"]
    out: dict[str, float] = {}
    for short, direction in (("it", "i2t"), ("ti", "t2i")):
        total = 0.0
        for k in ks:
            value = float(res[f"{direction}/recall@{k}"])
            out[f"r{k}_{short}"] = value
            total += 100.0 * value
        out[f"rsum_{short}"] = total
    out["rsum"] = out["rsum_it"] + out["rsum_ti"]
    return out


@dataclass
class EntryEvaluation:
    """Everything measured on one EmbeddingSet: the table ``row`` (metrics + retrieval + counts),
    the SAS sweep rows, per-direction SAS details, seconds per metric and metrics skipped."""

    row: dict[str, Any]
    sweep: list[dict[str, float]]
    sas_details: dict[str, Any]
    seconds: dict[str, float]
    skipped: dict[str, str]


def evaluate_embedding_set(
    emb: Any,
    cfg: AlignmentMetricsConfig,
    *,
    retrieval_ks: Sequence[int] | None = (1, 5, 10),
    with_sweep: bool = True,
) -> EntryEvaluation:
    """Metrics (and optionally retrieval and the SAS sweep) on one :class:`EmbeddingSet`."""
    pairs = paired_embeddings(emb, caption=cfg.caption, normalize=cfg.normalize, on_missing=cfg.on_missing_caption)
    opts = metric_options(cfg)
    report = compute_alignment_metrics(pairs.image, pairs.text, cfg.metrics, opts)
    row: dict[str, Any] = {
        "n_pairs": report.n,
        "n_images": int(emb.num_images),
        "n_captions": int(emb.num_texts),
        "n_images_without_caption": pairs.n_skipped,
        "dim": report.dims[0],
        **report.values,
    }
    seconds = dict(report.seconds)
    sweep: list[dict[str, float]] = []
    details: dict[str, Any] = {}
    if report.dims[0] == report.dims[1]:
        start = time.perf_counter()
        stats = {
            "it": spectral_stats(pairs.image, pairs.text, eps=cfg.eps, memory_budget=opts.memory_budget),
            "ti": spectral_stats(pairs.text, pairs.image, eps=cfg.eps, memory_budget=opts.memory_budget),
        }
        details = {d: sas_from_stats(st, cfg.topq) for d, st in stats.items()}
        if with_sweep:
            for q in cfg.sweep_topqs:
                it, ti = sas_from_stats(stats["it"], q), sas_from_stats(stats["ti"], q)
                sweep.append({"topq": q, "n_kept_it": it.n_kept, "n_kept_ti": ti.n_kept, "sas_it": it.score,
                              "sas_ti": ti.score, "sas_imbalance": it.score - ti.score})
        seconds["sas_details_and_sweep"] = time.perf_counter() - start
    if retrieval_ks:
        start = time.perf_counter()
        row.update(retrieval_targets(emb, retrieval_ks))
        seconds["retrieval"] = time.perf_counter() - start
    return EntryEvaluation(row=row, sweep=sweep, sas_details=details, seconds=seconds, skipped=report.skipped)


# ----------------------------------------------------------------------------- loading

def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base_dir / p


def load_entry_embeddings(entry: StudyEntry, base_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The entry's EmbeddingSet and a provenance dict (path and sha256 of the arrays, or the extract spec)."""
    from medvl.evaluation.embeddings import load_embeddings
    from medvl.utils.hashing import hash_file, hash_object

    label = f"{entry.model}/{entry.dataset}"
    if entry.embeddings is not None:
        path = _resolve(entry.embeddings, base_dir)
        try:
            emb = load_embeddings(path)
        except (OSError, ValueError) as exc:
            raise StudyError(f"entry {label}: cannot load embeddings from {path}: {exc}") from exc
        tensors = path / "embeddings.safetensors" if path.is_dir() else path
        source = {"embeddings": str(path), "sha256": hash_file(tensors) if tensors.is_file() else None,
                  "meta": emb.meta}
        return emb, source
    assert entry.extract is not None
    spec = entry.extract
    try:
        emb = _extract(spec, base_dir)
    except (OSError, ValueError) as exc:
        raise StudyError(f"entry {label}: extraction failed: {exc}") from exc
    return emb, {"extract": spec.model_dump(mode="json"), "extract_hash": hash_object(spec.model_dump(mode="json")),
                 "meta": emb.meta}


def _extract(spec: ExtractSpec, base_dir: Path) -> Any:
    """Encode one split of a manifest with any model of the front door (cached when asked).

    Mirrors ``medvl evaluate``: a medvl run's own data settings (plus ``spec.data`` overrides),
    the family's own preprocessing for published models; the split's records in evaluation mode
    (every caption).
    """
    from medvl.data.dataset import select_split
    from medvl.data.manifest import read_manifest
    from medvl.evaluation.extraction import evaluation_dataset, extract_embeddings
    from medvl.evaluation.suite import _data_config
    from medvl.models.loading import load_model

    def opt(path: str | None) -> Path | None:
        return None if path is None else _resolve(path, base_dir)

    from medvl.utils.devices import resolve_device

    manifest = _resolve(spec.manifest, base_dir)
    local = _resolve(spec.model_spec, base_dir)
    model_spec: str | Path = local if local.exists() else spec.model_spec  # else a hub id
    encoder = load_model(model_spec, which=spec.which, device=resolve_device(spec.device), trust_remote_code=spec.trust_remote_code)
    run_dir = local if encoder.identity.get("format") == "medvl" else None
    data_cfg = _data_config(manifest, run_dir, spec.data)
    m = read_manifest(manifest, root=opt(spec.root))
    subset = select_split(m, data_cfg, spec.split)
    if len(subset) == 0:
        raise StudyError(f"the {spec.split!r} split of {manifest} is empty")
    ds = evaluation_dataset(encoder, subset, data_cfg)
    manifest_hash = m.hash()
    return extract_embeddings(
        encoder, ds, batch_size=spec.batch_size, num_workers=spec.num_workers, progress=spec.progress,
        cache_dir=opt(spec.cache_dir), data_identity={"manifest_hash": manifest_hash, "split": spec.split, "ids": ds.ids},
        file_fingerprint=data_cfg.file_fingerprint,
        meta={"manifest": str(manifest), "manifest_hash": manifest_hash, "split": spec.split},
    )


# ----------------------------------------------------------------------------- statistics

def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([float(r.get(key, math.nan)) if r.get(key) is not None else math.nan for r in rows])


def _scopes(rows: Sequence[Mapping[str, Any]], natural: str, medical: str) -> list[tuple[str, list[int]]]:
    scopes: list[tuple[str, list[int]]] = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        scopes.append((f"dataset={ds}", [i for i, r in enumerate(rows) if r["dataset"] == ds]))
    for dom in (natural, medical):
        idx = [i for i, r in enumerate(rows) if r.get("domain") == dom]
        if idx:
            scopes.append((f"domain={dom}", idx))
    scopes.append(("pooled", list(range(len(rows)))))
    return scopes


def correlation_rows(
    rows: Sequence[Mapping[str, Any]],
    metric_columns: Sequence[str],
    targets: Sequence[str],
    methods: Sequence[str],
    *,
    natural: str = "natural",
    medical: str = "medical",
    min_n: int = 3,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Long-format correlations: one row per (scope, metric, target, method)."""
    out: list[dict[str, Any]] = []
    for scope, idx in _scopes(rows, natural, medical):
        sub = [rows[i] for i in idx]
        for metric in metric_columns:
            x = _column(sub, metric)
            for target in targets:
                y = _column(sub, target)
                for method in methods:
                    res = correlate(x, y, method, min_n=min_n, n_resamples=n_resamples,
                                    confidence=confidence, seed=seed)
                    out.append({"scope": scope, "metric": metric, "target": target, **res.to_dict(),
                                "stars": significance_stars(res.p),
                                "higher_is_better": HIGHER_IS_BETTER.get(metric)})
    return out


def domain_test_rows(
    rows: Sequence[Mapping[str, Any]], metric_columns: Sequence[str], natural: str, medical: str
) -> list[dict[str, Any]]:
    """Per metric: mean ± std (ddof=0) per domain and the two-sided Mann–Whitney U (natural vs medical)."""
    nat = [r for r in rows if r.get("domain") == natural]
    med = [r for r in rows if r.get("domain") == medical]
    out = []
    for metric in metric_columns:
        cmp = domain_comparison(_column(nat, metric), _column(med, metric))
        out.append({"metric": metric, f"mean_{natural}": cmp["mean_a"], f"std_{natural}": cmp["std_a"],
                    f"n_{natural}": int(cmp["n_a"]), f"mean_{medical}": cmp["mean_b"], f"std_{medical}": cmp["std_b"],
                    f"n_{medical}": int(cmp["n_b"]), "mwu_u": cmp["mwu_u"], "mwu_p": cmp["mwu_p"],
                    "stars": significance_stars(cmp["mwu_p"])})
    return out


def imbalance_test_rows(
    rows: Sequence[Mapping[str, Any]], natural: str, medical: str, column: str = "sas_imbalance"
) -> list[dict[str, Any]]:
    """One-sample t (H0 μ = 0) of the imbalance per domain, plus one-sided MWU medical > natural."""
    out: list[dict[str, Any]] = []
    groups = {dom: _column([r for r in rows if r.get("domain") == dom], column) for dom in (natural, medical)}
    for dom, values in groups.items():
        t = one_sample_t(values)
        out.append({"test": "one_sample_t", "domain": dom, **t, "stars": significance_stars(t["p"])})
    p = mann_whitney_greater(groups[medical], groups[natural])
    out.append({"test": f"mwu_{medical}_greater_than_{natural}", "domain": f"{medical} vs {natural}",
                "mean": math.nan, "std": math.nan, "n": float(sum(np.isfinite(v).sum() for v in groups.values())),
                "t": math.nan, "p": p, "stars": significance_stars(p)})
    return out


def sweep_summary(
    sweep_rows: Sequence[Mapping[str, Any]], natural: str, medical: str
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Per topq: domain means of SAS(I→T), SAS(T→I) and the imbalance; ``best_q`` per direction =
    argmax_q |mean_natural − mean_medical| (the SAS repo's eigenspectrum-concentration summary)."""
    qs = sorted({float(r["topq"]) for r in sweep_rows})
    table: list[dict[str, Any]] = []
    for q in qs:
        at = [r for r in sweep_rows if float(r["topq"]) == q]
        row: dict[str, Any] = {"topq": q}
        for col in ("sas_it", "sas_ti", "sas_imbalance"):
            for dom in (natural, medical):
                vals = _column([r for r in at if r.get("domain") == dom], col)
                vals = vals[np.isfinite(vals)]
                row[f"{col}_{dom}"] = float(vals.mean()) if vals.size else math.nan
                row[f"{col}_{dom}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
            row[f"{col}_gap"] = abs(row[f"{col}_{natural}"] - row[f"{col}_{medical}"])
        table.append(row)
    best: dict[str, float] = {}
    for col in ("sas_it", "sas_ti"):
        gaps = [(r[f"{col}_gap"], r["topq"]) for r in table if math.isfinite(r[f"{col}_gap"])]
        best[f"best_q_{col}"] = max(gaps)[1] if gaps else math.nan
    return table, best


def benchmark_rows(
    rows: Sequence[Mapping[str, Any]],
    pooled_groups: Sequence[str],
    metric_columns: Sequence[str],
    target: str = "rsum",
    tolerance: int = 2,
) -> list[dict[str, Any]]:
    """Entries outside ``pooled_groups`` (e.g. medical benchmark models) against the pooled models.

    Per benchmark entry and metric: its value, the pooled models' mean on the same dataset and in
    the same domain, and the SAS repo's "rank consistency": how many pooled models on that dataset
    have a lower metric value vs how many have a lower ``target``; consistent when the two counts
    differ by at most ``tolerance`` (the repo checks Δcos against rSum on ROCO with tolerance 2).
    """
    pooled = [r for r in rows if r["group"] in pooled_groups]
    out: list[dict[str, Any]] = []
    for bench in (r for r in rows if r["group"] not in pooled_groups):
        same_ds = [r for r in pooled if r["dataset"] == bench["dataset"]]
        same_dom = [r for r in pooled if r.get("domain") == bench.get("domain")]
        t_val = float(bench.get(target, math.nan))
        t_below = int(np.sum(_column(same_ds, target) < t_val)) if math.isfinite(t_val) else -1
        for metric in metric_columns:
            value = float(bench.get(metric, math.nan))
            ds_vals, dom_vals = _column(same_ds, metric), _column(same_dom, metric)
            m_below = int(np.sum(ds_vals < value)) if math.isfinite(value) else -1
            ok = m_below >= 0 and t_below >= 0
            out.append({
                "model": bench["model"], "dataset": bench["dataset"], "domain": bench.get("domain"),
                "metric": metric, "value": value,
                "pooled_mean_dataset": float(np.nanmean(ds_vals)) if np.isfinite(ds_vals).any() else math.nan,
                "pooled_mean_domain": float(np.nanmean(dom_vals)) if np.isfinite(dom_vals).any() else math.nan,
                "n_pooled_dataset": len(same_ds), "n_below_metric": m_below if ok else None,
                f"n_below_{target}": t_below if ok else None,
                "rank_consistent": (abs(m_below - t_below) <= tolerance) if ok else None,
            })
    return out


# ----------------------------------------------------------------------------- reports

def _corr_markdown(
    corr: Sequence[Mapping[str, Any]], metric_columns: Sequence[str], targets: Sequence[str],
    methods: Sequence[str],
) -> str:
    parts = ["# Retrieval predictivity\n",
             "Correlation of each alignment metric with retrieval, as r (n); stars: * p<.05, ** p<.01, *** p<.001.",
             "p-values below 20 pairs are exact / permutation p-values, so a correlation over 4 points (smallest",
             "attainable p = 2/4! = 0.083) never gets a star; see correlations.csv for p, p_method and the CI.",
             "Rows are sorted by |pooled r|. Within-dataset columns correlate across models.\n"]
    scopes = list(dict.fromkeys(r["scope"] for r in corr))
    index = {(r["scope"], r["metric"], r["target"], r["method"]): r for r in corr}
    for method in methods:
        for target in targets:
            def pooled_abs(m: str, _t: str = target, _meth: str = method) -> float:
                r = index.get(("pooled", m, _t, _meth), {}).get("r", math.nan)
                return -abs(r) if math.isfinite(r) else math.inf
            ordered = sorted(metric_columns, key=pooled_abs)
            headers = ["metric", *[s.split("=", 1)[-1] for s in scopes], "pooled CI", "n pooled"]
            body = []
            for m in ordered:
                cells: list[Any] = []
                for s in scopes:
                    r = index.get((s, m, target, method))
                    cells.append("–" if r is None or not math.isfinite(r["r"])
                                 else f"{r['r']:+.3f}{r['stars']} (n={r['n']})")
                pooled = index.get(("pooled", m, target, method), {})
                ci = (f"[{pooled['ci_low']:+.2f}, {pooled['ci_high']:+.2f}]"
                      if pooled and math.isfinite(pooled.get("ci_low", math.nan)) else "–")
                body.append([m, *cells, ci, pooled.get("n", 0)])
            parts.append(f"## {method.capitalize()} r with {target}\n")
            parts.append(markdown_table(headers, body))
    # the paper's directional test: does SAS(I→T) track image→text retrieval more than text→image?
    if {"rsum_it", "rsum_ti"} <= set(targets) and "sas_it" in metric_columns:
        parts.append("## Directional test (pooled Spearman)\n")
        body = []
        for col in ("sas_it", "sas_ti"):
            a = index.get(("pooled", col, "rsum_it", "spearman"), {}).get("r", math.nan)
            b = index.get(("pooled", col, "rsum_ti", "spearman"), {}).get("r", math.nan)
            body.append([col, a, b, abs(a) > abs(b) if math.isfinite(a) and math.isfinite(b) else "–"])
        parts.append(markdown_table(["metric", "r with rsum_it", "r with rsum_ti", "|r_it| > |r_ti|"], body, 3))
    return "\n".join(parts)


def _domain_markdown(domain_rows: Sequence[Mapping[str, Any]], imbalance_rows: Sequence[Mapping[str, Any]],
                     natural: str, medical: str) -> str:
    parts = [f"# Domain tests ({natural} vs {medical})\n",
             "Mean ± std (ddof=0) per domain, two-sided Mann–Whitney U.\n"]
    body = [[r["metric"], f"{fmt(r[f'mean_{natural}'])} ± {fmt(r[f'std_{natural}'])}",
             f"{fmt(r[f'mean_{medical}'])} ± {fmt(r[f'std_{medical}'])}", r["mwu_p"], r["stars"]]
            for r in domain_rows]
    parts.append(markdown_table(["metric", natural, medical, "MWU p", ""], body))
    parts.append("\n## SAS imbalance = SAS(I→T) − SAS(T→I)\n")
    body = [[r["test"], r["domain"], int(r["n"]), r["mean"], r["std"], r["t"], r["p"], r["stars"]]
            for r in imbalance_rows]
    parts.append(markdown_table(["test", "domain", "n", "mean", "std (ddof=1)", "t", "p", ""], body))
    return "\n".join(parts)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def check_study_inputs(config: AlignmentStudyConfig, config_dir: str | os.PathLike[str] = ".") -> None:
    """Every entry's input exists (EmbeddingSet directory, or manifest and model for extraction).

    Cheap checks run before the study writes anything; errors are :class:`StudyError` naming the
    entry and the path (relative paths are resolved against ``config_dir``).
    """
    from medvl.models.loading import detect_format

    base = Path(config_dir)
    for entry in config.entries:
        label = f"entry {entry.model}/{entry.dataset}"
        if entry.embeddings is not None:
            path = _resolve(entry.embeddings, base)
            is_set = all((path / n).is_file() for n in ("embeddings.json", "embeddings.safetensors"))
            if not is_set and not (path.suffix == ".npz" and path.is_file()):
                raise StudyError(f"{label}: embeddings {path} is neither an EmbeddingSet directory "
                                 "(embeddings.json + embeddings.safetensors) nor an .npz file")
            continue
        assert entry.extract is not None
        spec = entry.extract
        manifest = _resolve(spec.manifest, base)
        if not manifest.is_file():
            raise StudyError(f"{label}: extract.manifest not found: {manifest}")
        if spec.model_spec.startswith("hf-hub:"):
            continue  # resolved by the hub client when the entry is extracted
        local = _resolve(spec.model_spec, base)
        if not local.exists():
            raise StudyError(f"{label}: extract model not found: {local}")
        try:
            detect_format(local)
        except ValueError as exc:
            raise StudyError(f"{label}: extract model {local}: {exc}") from None


def run_study(
    config: AlignmentStudyConfig,
    *,
    config_dir: str | os.PathLike[str] = ".",
    out_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: Any = None,
) -> Path:
    """Run the study described by ``config``; returns the output directory (see module doc).

    The config and every entry's inputs are checked before the output directory is created; the
    directory is locked while the study writes it, and removed again if the study fails before
    writing anything there.
    """
    from medvl.utils.rundir import check_run_dir, locked_run_dir

    cfg = config
    for t in cfg.correlation.targets:
        if t.startswith("r") and t[1:].split("_")[0].isdigit() and int(t[1:].split("_")[0]) not in cfg.retrieval_ks:
            raise StudyError(f"correlation.targets: {t!r} needs K={t[1:].split('_')[0]} in retrieval_ks {cfg.retrieval_ks}")
    names = resolve_metric_names(cfg.metrics.metrics)
    target = Path(out_dir if out_dir is not None else cfg.output_dir)
    check_run_dir(target, overwrite=overwrite, resumable=False)
    check_study_inputs(cfg, config_dir)
    with locked_run_dir(target, overwrite=overwrite, resumable=False) as out:
        _run_study(cfg, names, Path(config_dir), out, progress)
    return target


def _run_study(cfg: AlignmentStudyConfig, names: list[str], base: Path, out: Path, progress: Any) -> None:
    """The study's work and files, in a prepared and locked output directory."""
    from medvl.config.loading import save_resolved_config
    from medvl.evaluation.alignment.plots import (
        plot_eigen_spectrum,
        plot_metric_vs_target,
        plot_mode_correlations,
    )

    corr_cfg = cfg.correlation
    save_resolved_config(cfg, out)
    natural, medical = cfg.natural_domain, cfg.medical_domain
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    entry_records: list[dict[str, Any]] = []
    for i, entry in enumerate(cfg.entries):
        if progress is not None:
            progress(f"[{i + 1}/{len(cfg.entries)}] {entry.model} / {entry.dataset}")
        emb, source = load_entry_embeddings(entry, base)
        try:
            ev = evaluate_embedding_set(emb, cfg.metrics, retrieval_ks=cfg.retrieval_ks)
        except ValueError as exc:
            raise StudyError(f"entry {entry.model}/{entry.dataset}: {exc}") from exc
        ident = {"model": entry.model, "dataset": entry.dataset, "domain": cfg.domain_of(entry), "group": entry.group}
        rows.append({**ident, **ev.row})
        sweep_rows.extend({**ident, **s} for s in ev.sweep)
        record = {**ident, "source": source, "row": ev.row, "seconds": ev.seconds, "skipped": ev.skipped,
                  "sas": {d: r.to_dict() for d, r in ev.sas_details.items()}}
        entry_records.append(record)
        stem = _slug(f"{entry.model}__{entry.dataset}")
        atomic_write_json(out / "entries" / f"{stem}.json", record)
        if cfg.plots and ev.sas_details:
            plot_eigen_spectrum({"image anchor (I→T)": ev.sas_details["it"], "text anchor (T→I)": ev.sas_details["ti"]},
                                out / "plots" / f"spectrum_{stem}.png", title=f"{entry.model} / {entry.dataset}")
            for d, label in (("it", "I→T"), ("ti", "T→I")):
                plot_mode_correlations(ev.sas_details[d], out / "plots" / f"rho_{d}_{stem}.png",
                                       title=f"{entry.model} / {entry.dataset}: per-mode |ρ|, SAS({label}) = "
                                             f"{ev.sas_details[d].score:.4f}")
    metric_columns = [c for n in names for c in ALIGNMENT_METRICS[n].outputs if any(c in r for r in rows)]
    pooled = [r for r in rows if r["group"] in cfg.pooled_groups]
    corr = correlation_rows(pooled, metric_columns, corr_cfg.targets, corr_cfg.methods, natural=natural,
                            medical=medical, min_n=corr_cfg.min_n, n_resamples=corr_cfg.bootstrap_resamples,
                            confidence=corr_cfg.confidence, seed=corr_cfg.seed)
    domain_rows = domain_test_rows(pooled, metric_columns, natural, medical)
    imbalance_rows = (imbalance_test_rows(pooled, natural, medical) if "sas_imbalance" in metric_columns else [])
    bench_rows = benchmark_rows(rows, cfg.pooled_groups, metric_columns,
                                target="rsum" if "rsum" in corr_cfg.targets else corr_cfg.targets[0])
    pooled_keys = {(r["model"], r["dataset"]) for r in pooled}
    sweep_table, best_q = sweep_summary([s for s in sweep_rows if (s["model"], s["dataset"]) in pooled_keys],
                                        natural, medical)
    # ---- files
    write_csv(out / "entries.csv", rows)
    table_cols = ["model", "dataset", "domain", "group", *metric_columns,
                  *[c for c in ("rsum_it", "rsum_ti", "rsum") if any(c in r for r in rows)]]
    atomic_write_text(out / "entries.md", "# Alignment metrics and retrieval per model × dataset\n\n"
                      + markdown_table(table_cols, [[r.get(c, math.nan) for c in table_cols] for r in rows]))
    write_csv(out / "correlations.csv", corr)
    atomic_write_text(out / "correlations.md", _corr_markdown(corr, metric_columns, corr_cfg.targets, corr_cfg.methods))
    write_csv(out / "domain_tests.csv", domain_rows)
    write_csv(out / "imbalance_tests.csv", imbalance_rows)
    atomic_write_text(out / "domain_tests.md", _domain_markdown(domain_rows, imbalance_rows, natural, medical))
    write_csv(out / "sweep.csv", sweep_rows)
    if bench_rows:
        write_csv(out / "benchmark_models.csv", bench_rows)
        cols = list(bench_rows[0])
        atomic_write_text(out / "benchmark_models.md", "# Models outside the pooled groups vs the pooled models\n\n"
                          + markdown_table(cols, [[r[c] for c in cols] for r in bench_rows]))
    if sweep_table:
        cols = ["topq", f"sas_it_{natural}", f"sas_it_{medical}", "sas_it_gap", f"sas_ti_{natural}",
                f"sas_ti_{medical}", "sas_ti_gap", f"sas_imbalance_{natural}", f"sas_imbalance_{medical}"]
        atomic_write_text(out / "sweep.md", "# SAS topq sweep (domain means)\n\n"
                          + markdown_table(cols, [[r[c] for c in cols] for r in sweep_table])
                          + f"\nbest_q (argmax |mean {natural} − mean {medical}|): "
                          + ", ".join(f"{k} = {fmt(v, 1)}" for k, v in best_q.items()) + "\n")
    if cfg.plots:
        labels = [f"{r['model']}/{r['dataset']}" for r in pooled]
        for metric in [m for m in ("sas_sym", "sas_it", "sas_ti") if m in metric_columns]:
            for target in corr_cfg.targets:
                plot_metric_vs_target(_column(pooled, metric), _column(pooled, target),
                                      [r["domain"] for r in pooled], labels,
                                      out / "plots" / f"scatter_{metric}_vs_{target}.png",
                                      metric_name=metric, target_name=target)
    atomic_write_json(out / "results.json", {
        "medvl_version": __version__,
        "config": cfg.model_dump(mode="json"),
        "options": metric_options(cfg.metrics).to_dict(),
        "seeds": {"metrics": cfg.metrics.seed, "bootstrap": corr_cfg.seed},
        "metric_columns": metric_columns,
        "entries": entry_records,
        "correlations": corr,
        "domain_tests": domain_rows,
        "imbalance_tests": imbalance_rows,
        "benchmark_models": bench_rows,
        "sweep": {"rows": sweep_rows, "domain_means": sweep_table, **best_q},
    })
