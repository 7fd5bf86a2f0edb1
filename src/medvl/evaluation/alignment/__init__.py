"""Alignment diagnostics for paired image/text embeddings (pure functions of ``(n, d)`` arrays).

Spectral Alignment Score (:mod:`.sas`), CKA (:mod:`.cka`), SVCCA (:mod:`.cca`), CORAL and MMD²
(:mod:`.distribution`), Δcos / modality gap / RMG / alignment & uniformity (:mod:`.geometry`),
mutual k-NN (:mod:`.knn`); every ``n×n`` quantity is reduced in blocks under a memory budget
(:mod:`.blocked`). :func:`compute_alignment_metrics` runs a selection from the registry.
Studies (metrics × retrieval correlations) live in :mod:`.study`, figures in :mod:`.plots`.
"""

from medvl.evaluation.alignment.blocked import DEFAULT_MEMORY_BUDGET_BYTES
from medvl.evaluation.alignment.cca import canonical_correlations, svcca
from medvl.evaluation.alignment.cka import kernel_cka, linear_cka
from medvl.evaluation.alignment.distribution import coral_distance, mmd2_rbf
from medvl.evaluation.alignment.geometry import (
    alignment_loss,
    alignment_uniformity,
    delta_cos,
    mean_paired_l2,
    modality_gap,
    modality_gap_vector,
    rmg_sas_repo,
    rmg_schrodi,
    uniformity,
)
from medvl.evaluation.alignment.knn import mutual_knn
from medvl.evaluation.alignment.registry import (
    ALIGNMENT_METRICS,
    HIGHER_IS_BETTER,
    METRIC_PRESETS,
    AlignmentOptions,
    AlignmentReport,
    compute_alignment_metrics,
    resolve_metric_names,
)
from medvl.evaluation.alignment.sas import (
    SASResult,
    kept_mode_count,
    sas_directional,
    sas_per_record,
    sas_topq_sweep,
    spectral_alignment,
    spectral_alignment_score,
)
from medvl.evaluation.alignment.validation import AlignmentInputError, AlignmentPreconditionError

__all__ = [
    "ALIGNMENT_METRICS",
    "DEFAULT_MEMORY_BUDGET_BYTES",
    "HIGHER_IS_BETTER",
    "METRIC_PRESETS",
    "AlignmentInputError",
    "AlignmentOptions",
    "AlignmentPreconditionError",
    "AlignmentReport",
    "SASResult",
    "alignment_loss",
    "alignment_uniformity",
    "canonical_correlations",
    "compute_alignment_metrics",
    "coral_distance",
    "delta_cos",
    "kept_mode_count",
    "kernel_cka",
    "linear_cka",
    "mean_paired_l2",
    "mmd2_rbf",
    "modality_gap",
    "modality_gap_vector",
    "mutual_knn",
    "resolve_metric_names",
    "rmg_sas_repo",
    "rmg_schrodi",
    "sas_directional",
    "sas_per_record",
    "sas_topq_sweep",
    "spectral_alignment",
    "spectral_alignment_score",
    "svcca",
    "uniformity",
]
