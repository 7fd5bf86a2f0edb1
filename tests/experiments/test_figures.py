"""Sweep figures as a reader sees them: every figure non-empty, titled, with readable axis labels."""

from __future__ import annotations

from pathlib import Path

from medvl.config.experiment import ExperimentConfig
from medvl.evaluation.display import metric_label
from medvl.experiments.grid import Cell
from medvl.experiments.report import build_report
from medvl.utils.io import atomic_write_json

CLS = "classification/findings/map_macro"
RET = "retrieval/i2t/recall@5"


def _sweep(root: Path) -> ExperimentConfig:
    cfg = ExperimentConfig.model_validate({
        "name": "demo", "grid": {"lambdas": [0.5, 1.0], "folds": [0, 1], "seeds": [0]},
        "stages": [{"name": "classifier", "inline": {}, "over_lambda": False},
                   {"name": "tune", "inline": {}, "init_from": "classifier"}],
        "classification_metric": CLS, "report_metrics": ["retrieval/t2i/recall@5"],
    })
    for cell, cls, ret in [(Cell("classifier", None, f, 0), 0.8, 0.01) for f in (0, 1)] + \
            [(Cell("tune", lam, f, 0), 0.8 - 0.4 * lam, 0.1 + 0.05 * lam) for lam in (0.5, 1.0) for f in (0, 1)]:
        trajectory = [{"epoch": e, f"val/{CLS}": cls + 0.01 * e, f"val/{RET}": ret * e / 2,
                       "val/retrieval/t2i/recall@5": ret * e / 3} for e in range(4)]
        grad = [{"step": s, "bce": 0.1 * (s + 1), "clip": 1.0, "ratio/bce/clip": 0.1 * (s + 1)} for s in range(5)]
        atomic_write_json(root / cell.relpath / "cell_results.json", {
            "cell": cell.as_dict(), "trajectory": trajectory, "grad_probe": grad,
            "test": {"best": {"epoch": 3, "metrics": {CLS: cls, RET: ret, "retrieval/t2i/recall@5": ret}}}})
    return cfg


def test_every_sweep_figure_is_readable(tmp_path: Path, saved_figures: list) -> None:
    files = build_report(tmp_path, _sweep(tmp_path))
    pngs = [f for f in saved_figures if f.png_pixels_std is not None]
    assert len(pngs) == 3  # trajectories, trade-off, gradient ratio
    for fig in pngs:
        assert fig.png_pixels_std > 5  # not blank
        assert fig.titles, "every figure has a title"
        assert not fig.unreadable(), fig.unreadable()
    everything = [t for f in pngs for t in (*f.titles, *f.axis_labels)]
    assert metric_label(f"val/{CLS}") in everything  # "validation findings mAP (macro)"
    grad = next(f for f in pngs if any("Gradient-norm ratio" in t for t in f.titles))
    assert grad.axis_labels[1] == "‖∇L_bce‖ / ‖∇L_clip‖"  # was the internal key ratio/bce/clip
    tradeoff = next(f for f in pngs if any("trade-off" in t for t in f.titles))
    assert any(t.startswith("Pareto-optimal") for t in tradeoff.legend_texts)
    assert files.report.is_file()


def test_metric_labels() -> None:
    assert metric_label("retrieval/i2t/recall@5") == "image→text R@5"
    assert metric_label("val/retrieval/t2i/mrr") == "validation text→image MRR"
    assert metric_label("classification/findings/map_macro") == "findings mAP (macro)"
    assert metric_label("zeroshot/findings/novel/auroc_macro") == "zero-shot findings AUROC (macro) (novel classes)"
    assert metric_label("ratio/bce/clip") == "‖∇L_bce‖ / ‖∇L_clip‖"
    assert metric_label("cos/bce/clip") == "cos(∇L_bce, ∇L_clip)"
    assert metric_label("sas_it") == "SAS (image→text)" and metric_label("r5_ti") == "text→image R@5"
    assert metric_label("val/loss") == "validation loss"
    assert "_" not in metric_label("something_new/odd_key")
