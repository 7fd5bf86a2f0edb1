"""Registry of alignment metrics: a plain ``name → AlignmentMetric`` dict (timm style) and one
entry point, :func:`compute_alignment_metrics`, that runs a selection on one paired set.

Each metric maps ``(image (n, d_i), text (n, d_t), AlignmentOptions)`` to named float outputs
(some produce several columns, e.g. ``sas`` → ``sas_it``, ``sas_ti``, ``sas_sym``, ``sas_imbalance``).
:data:`HIGHER_IS_BETTER` says which way each output column points (``None``: no direction).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from medvl.evaluation.alignment.cca import DEFAULT_SVCCA_DIMS, svcca
from medvl.evaluation.alignment.cka import kernel_cka, linear_cka
from medvl.evaluation.alignment.distribution import (
    SAS_REPO_MMD_SCALE,
    SAS_REPO_MMD_SIGMA,
    coral_distance,
    mmd2_rbf,
)
from medvl.evaluation.alignment.geometry import (
    alignment_uniformity,
    delta_cos,
    mean_paired_l2,
    modality_gap,
    rmg_sas_repo,
    rmg_schrodi,
)
from medvl.evaluation.alignment.knn import DEFAULT_KNN_K, mutual_knn
from medvl.evaluation.alignment.sas import DEFAULT_EPS, DEFAULT_TOPQ, sas_directional
from medvl.evaluation.alignment.validation import (
    AlignmentInputError,
    AlignmentPreconditionError,
    check_nonzero_rows,
    check_paired,
)

__all__ = [
    "ALIGNMENT_METRICS",
    "HIGHER_IS_BETTER",
    "METRIC_PRESETS",
    "AlignmentMetric",
    "AlignmentOptions",
    "AlignmentReport",
    "compute_alignment_metrics",
    "resolve_metric_names",
]


@dataclass(frozen=True)
class AlignmentOptions:
    """Options shared by the metrics (recorded with every result).

    ``topq``/``eps``: SAS; ``knn_k``: mutual k-NN; ``svcca_dims``; ``mmd_sigma`` (``None`` = median
    heuristic over distinct pairs, self-distances excluded) for ``mmd2_rbf*``; ``rbf_threshold``:
    RBF-CKA bandwidth as a fraction of the median distance (Kornblith: all n² entries, diagonal
    included); ``alignment_alpha``/``uniformity_t``: Wang & Isola; ``median_max_rows``/``seed``:
    median bandwidths are exact on all rows when their distinct distances fit in 512 MiB
    (``None``, the default), otherwise — or above ``median_max_rows`` — on a seeded subsample
    (:func:`medvl.evaluation.alignment.blocked.median_rows`); ``memory_budget``: bytes for block
    buffers (``None`` = 1 GiB).
    """

    topq: float = DEFAULT_TOPQ
    eps: float = DEFAULT_EPS
    knn_k: int = DEFAULT_KNN_K
    svcca_dims: int = DEFAULT_SVCCA_DIMS
    mmd_sigma: float | None = None
    rbf_threshold: float = 1.0
    alignment_alpha: float = 2.0
    uniformity_t: float = 2.0
    median_max_rows: int | None = None
    seed: int = 0
    memory_budget: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for provenance."""
        return asdict(self)


MetricFn = Callable[[torch.Tensor, torch.Tensor, AlignmentOptions], dict[str, float]]


@dataclass(frozen=True)
class AlignmentMetric:
    """A registered metric: ``compute`` returns the ``outputs`` columns; ``same_space`` when both
    sets must share ``d``; ``cost`` is the time complexity (``n`` records, ``d`` dims)."""

    name: str
    compute: MetricFn
    outputs: tuple[str, ...]
    same_space: bool
    cost: str
    description: str
    normalizes: bool = False  # L2-normalises the rows (zero-norm rows are then an error)


def _sas(x: torch.Tensor, y: torch.Tensor, o: AlignmentOptions) -> dict[str, float]:
    return sas_directional(x, y, topq=o.topq, eps=o.eps, memory_budget=o.memory_budget)


def _one(name: str, fn: Callable[[torch.Tensor, torch.Tensor, AlignmentOptions], float]) -> MetricFn:
    def compute(x: torch.Tensor, y: torch.Tensor, o: AlignmentOptions) -> dict[str, float]:
        return {name: float(fn(x, y, o))}

    return compute


def _au(x: torch.Tensor, y: torch.Tensor, o: AlignmentOptions) -> dict[str, float]:
    return alignment_uniformity(
        x, y, alpha=o.alignment_alpha, t=o.uniformity_t, memory_budget=o.memory_budget
    )


#: Metrics that L2-normalise the rows of both sets before computing.
_NORMALIZING = {"delta_cos", "modality_gap", "mean_paired_l2", "rmg_schrodi", "rmg_sas_repo", "mutual_knn",
                "alignment_uniformity"}


def _entry(name: str, compute: MetricFn, outputs: tuple[str, ...], same_space: bool, cost: str,
           description: str) -> tuple[str, AlignmentMetric]:
    return name, AlignmentMetric(name, compute, outputs, same_space, cost, description, name in _NORMALIZING)


#: name → metric. Insertion order is the column order of result tables.
ALIGNMENT_METRICS: dict[str, AlignmentMetric] = dict(
    [
        _entry("sas", _sas, ("sas_it", "sas_ti", "sas_sym", "sas_imbalance"), True, "O(n d²)",
               "Spectral Alignment Score both directions, symmetric mean and imbalance (Gambetti et al. 2026)"),
        _entry("linear_cka", _one("linear_cka", lambda x, y, o: linear_cka(x, y, memory_budget=o.memory_budget)),
               ("linear_cka",), False, "O(n d²)", "linear CKA, biased HSIC (Kornblith et al. 2019)"),
        _entry("linear_cka_debiased",
               _one("linear_cka_debiased",
                    lambda x, y, o: linear_cka(x, y, debiased=True, memory_budget=o.memory_budget)),
               ("linear_cka_debiased",), False, "O(n d²)", "linear CKA, debiased (U-centred) HSIC"),
        _entry("rbf_cka",
               _one("rbf_cka", lambda x, y, o: kernel_cka(
                   x, y, threshold=o.rbf_threshold, median_max_rows=o.median_max_rows, seed=o.seed,
                   memory_budget=o.memory_budget)),
               ("rbf_cka",), False, "O(n² d)", "RBF CKA with median-distance bandwidth (Kornblith et al. 2019)"),
        _entry("svcca", _one("svcca", lambda x, y, o: svcca(x, y, dims=o.svcca_dims, memory_budget=o.memory_budget)),
               ("svcca",), False, "O(n d²)", "SVCCA, exact SVD + CCA, deterministic (Raghu et al. 2017)"),
        _entry("coral", _one("coral", lambda x, y, o: coral_distance(x, y, memory_budget=o.memory_budget)),
               ("coral",), True, "O(n d²)", "CORAL distance ‖C(X) − C(Y)‖_F (Sun & Saenko 2016)"),
        _entry("mmd2_rbf",
               _one("mmd2_rbf", lambda x, y, o: mmd2_rbf(
                   x, y, sigma=o.mmd_sigma, median_max_rows=o.median_max_rows, seed=o.seed,
                   memory_budget=o.memory_budget)),
               ("mmd2_rbf",), True, "O(n² d)", "MMD², RBF kernel, biased V-statistic (Gretton et al. 2012)"),
        _entry("mmd2_rbf_unbiased",
               _one("mmd2_rbf_unbiased", lambda x, y, o: mmd2_rbf(
                   x, y, sigma=o.mmd_sigma, unbiased=True, median_max_rows=o.median_max_rows, seed=o.seed,
                   memory_budget=o.memory_budget)),
               ("mmd2_rbf_unbiased",), True, "O(n² d)", "MMD², RBF kernel, unbiased paired U-statistic"),
        _entry("mmd_sas_repo",
               _one("mmd_sas_repo", lambda x, y, o: mmd2_rbf(
                   x, y, sigma=SAS_REPO_MMD_SIGMA, scale=SAS_REPO_MMD_SCALE, memory_budget=o.memory_budget)),
               ("mmd_sas_repo",), True, "O(n² d)", "the SAS repo's MMD: 100 · biased MMD², σ = 10"),
        _entry("delta_cos", _one("delta_cos", lambda x, y, o: delta_cos(x, y, memory_budget=o.memory_budget)), ("delta_cos",), True, "O(n d)",
               "matched minus unmatched mean cosine"),
        _entry("modality_gap", _one("modality_gap", lambda x, y, o: modality_gap(x, y, memory_budget=o.memory_budget)), ("modality_gap",), True,
               "O(n d)", "centroid L2 distance of the normalised sets (Liang et al. 2022)"),
        _entry("mean_paired_l2", _one("mean_paired_l2", lambda x, y, o: mean_paired_l2(x, y, memory_budget=o.memory_budget)),
               ("mean_paired_l2",), True, "O(n d)", "mean L2 between matched normalised pairs (Schrodi's L2I)"),
        _entry("rmg_schrodi", _one("rmg_schrodi", lambda x, y, o: rmg_schrodi(x, y, memory_budget=o.memory_budget)), ("rmg_schrodi",), True,
               "O(n d)", "relative modality gap as defined by Schrodi et al. 2025"),
        _entry("rmg_sas_repo", _one("rmg_sas_repo", lambda x, y, o: rmg_sas_repo(x, y, memory_budget=o.memory_budget)), ("rmg_sas_repo",), True,
               "O(n d)", "relative modality gap as the SAS repo computes it"),
        _entry("mutual_knn",
               _one("mutual_knn", lambda x, y, o: mutual_knn(x, y, k=o.knn_k, memory_budget=o.memory_budget)),
               ("mutual_knn",), False, "O(n² d)", "mutual k-NN overlap (Huh et al. 2024)"),
        _entry("alignment_uniformity", _au, ("alignment", "uniformity_image", "uniformity_text"), True, "O(n² d)",
               "alignment and uniformity (Wang & Isola 2020)"),
    ]
)

#: Direction of every output column: True = higher is better aligned, False = lower, None = neither.
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "sas_it": True, "sas_ti": True, "sas_sym": True, "sas_imbalance": None,
    "linear_cka": True, "linear_cka_debiased": True, "rbf_cka": True, "svcca": True,
    "coral": False, "mmd2_rbf": False, "mmd2_rbf_unbiased": False, "mmd_sas_repo": False,
    "delta_cos": True, "modality_gap": False, "mean_paired_l2": False,
    "rmg_schrodi": False, "rmg_sas_repo": False, "mutual_knn": True,
    "alignment": False, "uniformity_image": False, "uniformity_text": False,
}

#: Named selections. ``paper``: the SAS paper's comparison set in its repo's definitions.
METRIC_PRESETS: dict[str, tuple[str, ...]] = {
    "all": tuple(ALIGNMENT_METRICS),
    "paper": ("sas", "linear_cka", "coral", "mmd_sas_repo", "svcca", "rmg_sas_repo", "delta_cos"),
    "fast": tuple(name for name, m in ALIGNMENT_METRICS.items() if "n²" not in m.cost),
}


def _split_items(metrics: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    parts = [metrics] if isinstance(metrics, str) else [str(m) for m in metrics]
    return [item.strip() for part in parts for item in part.split(",") if item.strip()]


def resolve_metric_names(metrics: str | Sequence[str]) -> list[str]:
    """Expand presets / comma lists into registered names (order kept, duplicates dropped)."""
    items = _split_items(metrics)
    names: list[str] = []
    for item in items:
        if not item:
            continue
        expanded = METRIC_PRESETS.get(item, (item,))
        for name in expanded:
            if name not in ALIGNMENT_METRICS:
                known = ", ".join([*METRIC_PRESETS, *ALIGNMENT_METRICS])
                raise AlignmentInputError(f"unknown alignment metric {name!r}; known: {known}")
            if name not in names:
                names.append(name)
    if not names:
        raise AlignmentInputError("no alignment metric selected")
    return names


@dataclass
class AlignmentReport:
    """Result of :func:`compute_alignment_metrics` on one paired set."""

    values: dict[str, float]
    options: AlignmentOptions
    n: int
    dims: tuple[int, int]
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "values": dict(self.values),
            "options": self.options.to_dict(),
            "n": self.n,
            "dims": list(self.dims),
            "seconds": dict(self.seconds),
            "skipped": dict(self.skipped),
        }


def compute_alignment_metrics(
    image: Any,
    text: Any,
    metrics: str | Sequence[str] = "all",
    options: AlignmentOptions | None = None,
) -> AlignmentReport:
    """Compute the selected metrics on paired ``image (n, d_i)`` / ``text (n, d_t)`` rows.

    Inputs are used as given (normalise first where your pipeline does; the cosine and
    sphere metrics normalise internally). Errors are raised, never turned into NaN.

    A metric reached through a preset (``all``/``fast``/``paper``) whose precondition does not
    hold on this data (:class:`AlignmentPreconditionError`: ``d_i ≠ d_t`` for a one-space
    metric, ``svcca_dims`` above ``min(n − 1, d)``, ``knn_k ≥ n``, no variance, …) is listed in
    ``skipped`` with the reason and every other metric is still computed; a metric named
    explicitly raises instead. Bad data (NaN/inf rows, zero-norm rows where a selected metric
    normalises) always raises, naming the rows, before any metric runs.
    """
    opts = options or AlignmentOptions()
    x, y = check_paired(image, text, same_dim=False, min_n=2, names=("image", "text"))
    items = _split_items(metrics)
    explicit = {m for m in items if m in ALIGNMENT_METRICS}  # named directly, not through a preset
    names = resolve_metric_names(metrics)
    if any(ALIGNMENT_METRICS[name].normalizes for name in names):
        check_nonzero_rows(x, "image")  # zero-norm rows are bad data: fail before any work
        check_nonzero_rows(y, "text")
    report = AlignmentReport(values={}, options=opts, n=x.shape[0], dims=(x.shape[1], y.shape[1]))
    for name in names:
        metric = ALIGNMENT_METRICS[name]
        start = time.perf_counter()
        try:
            if metric.same_space and x.shape[1] != y.shape[1]:
                raise AlignmentPreconditionError(
                    f"needs one embedding space, got d_image = {x.shape[1]}, d_text = {y.shape[1]}"
                )
            report.values.update(metric.compute(x, y, opts))
        except AlignmentPreconditionError as exc:
            if name in explicit:
                raise AlignmentPreconditionError(f"{name}: {exc}") from exc
            report.skipped[name] = str(exc)
            continue
        report.seconds[name] = time.perf_counter() - start
    return report
