"""Human-readable names of medvl's metric keys, for figure titles, axis labels and legends.

Result files keep the stable internal keys (``retrieval/i2t/recall@5``,
``classification/findings/map_macro``, ``ratio/bce/clip``, ``sas_sym``); a figure shows what a
reader of a paper expects instead: ``image→text R@5``, ``findings mAP (macro)``,
``‖∇L_bce‖ / ‖∇L_clip‖``, ``SAS (mean of both directions)``. :func:`metric_label` does the
translation; an unknown key is still made readable (separators and underscores become spaces).
"""

from __future__ import annotations

import re

__all__ = ["metric_label"]

_DIRECTIONS = {"i2t": "image→text", "t2i": "text→image"}
_STATISTICS = {
    "map_macro": "mAP (macro)", "map_micro": "mAP (micro)", "auroc_macro": "AUROC (macro)", "auroc": "AUROC",
    "auroc_micro": "AUROC (micro)", "f1_macro": "F1 (macro)", "f1_micro": "F1 (micro)", "accuracy": "accuracy",
    "accuracy_top5": "top-5 accuracy", "balanced_accuracy": "balanced accuracy", "kappa": "quadratic κ",
    "accuracy_elementwise": "accuracy (per label)", "accuracy_subset": "exact-set accuracy", "mae": "MAE",
    "mrr": "MRR", "median_rank": "median rank", "mean_rank": "mean rank", "loss": "loss",
}
_ALIGNMENT = {
    "sas": "SAS", "sas_it": "SAS (image→text)", "sas_ti": "SAS (text→image)", "sas_sym": "SAS (mean of both directions)",
    "sas_imbalance": "SAS imbalance (I→T − T→I)", "linear_cka": "linear CKA", "linear_cka_debiased": "linear CKA (debiased)",
    "rbf_cka": "RBF CKA", "svcca": "SVCCA", "coral": "CORAL", "mmd2_rbf": "MMD² (RBF)",
    "mmd2_rbf_unbiased": "MMD² (RBF, unbiased)", "mmd_sas_repo": "MMD (SAS repo)", "delta_cos": "Δcos",
    "modality_gap": "modality gap", "mean_paired_l2": "mean paired L2", "rmg_schrodi": "relative modality gap",
    "rmg_sas_repo": "RMG (SAS repo)", "mutual_knn": "mutual k-NN", "alignment": "alignment (Wang & Isola)",
    "uniformity_image": "uniformity (image)", "uniformity_text": "uniformity (text)",
    "rsum": "rSum (R@1+5+10, both directions, %)", "rsum_it": "rSum image→text (%)",
    "rsum_ti": "rSum text→image (%)",
}
_PREFIXES = {"val": "validation", "train": "training", "test": "test"}


def _statistic(name: str) -> str:
    if name.startswith("recall@"):
        return f"R@{name.removeprefix('recall@')}"
    if name.startswith("label_precision@"):
        return f"label precision@{name.removeprefix('label_precision@')}"
    return _STATISTICS.get(name, name.replace("_", " "))


def metric_label(key: str) -> str:
    """A readable label for a metric key (see the module docstring for examples)."""
    key = str(key)
    if key in _ALIGNMENT:
        return _ALIGNMENT[key]
    match = re.fullmatch(r"r(\d+)_(it|ti)", key)
    if match:
        return f"{_DIRECTIONS['i2t' if match.group(2) == 'it' else 't2i']} R@{match.group(1)}"
    parts = key.split("/")
    prefix = ""
    if parts[0] in _PREFIXES and len(parts) > 1:
        prefix = _PREFIXES[parts[0]] + " "
        parts = parts[1:]
    head = parts[0]
    if head in ("ratio", "cos") and len(parts) == 3:
        a, b = parts[1], parts[2]
        body = f"‖∇L_{a}‖ / ‖∇L_{b}‖" if head == "ratio" else f"cos(∇L_{a}, ∇L_{b})"
    elif head == "retrieval" and len(parts) >= 3:
        body = f"{_DIRECTIONS.get(parts[1], parts[1])} {_statistic(parts[-1])}"
    elif head in ("classification", "zeroshot") and len(parts) >= 3:
        subset = f" ({parts[2]} classes)" if len(parts) == 4 else ""
        body = f"{parts[1].replace('_', ' ')} {_statistic(parts[-1])}{subset}"
        if head == "zeroshot":
            body = "zero-shot " + body
    elif head == "probe" and len(parts) == 3:
        body = f"{parts[1].replace('shot', '-shot')} probe {_statistic(parts[2])}"
    elif len(parts) == 1:
        body = _statistic(head)
    else:
        body = " ".join(p.replace("_", " ") for p in parts)
    return prefix + body
