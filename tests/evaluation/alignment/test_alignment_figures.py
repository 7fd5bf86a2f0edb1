"""Alignment figures as a reader sees them: non-empty, readable labels, no overlapping point labels,
no eigen-spectrum running into round-off when n < d, honest significance for small n."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from medvl.evaluation.alignment.correlation import correlate, significance_stars
from medvl.evaluation.alignment.plots import (
    RankDeficiencyWarning,
    numerical_rank,
    plot_eigen_spectrum,
    plot_metric_vs_target,
    plot_mode_correlations,
)
from medvl.evaluation.alignment.sas import spectral_alignment


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _overlap(a: object, b: object) -> bool:
    return bool(a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)  # type: ignore[attr-defined]


def test_eigen_spectrum_stops_at_the_rank_and_says_so(tmp_path: Path, saved_figures: list) -> None:
    rng = np.random.default_rng(0)
    img = _unit(rng.standard_normal((20, 64)))
    txt = _unit(img + 0.5 * rng.standard_normal((20, 64)))
    it, ti = spectral_alignment(img, txt, topq=0.1), spectral_alignment(txt, img, topq=0.1)
    assert numerical_rank(it.eigenvalues, it.n) == 19  # centred n = 20 rows: rank n - 1
    assert it.eigenvalues[-1] < 1e-12  # the null modes the old plot ran down to 1e-300 with
    with pytest.warns(RankDeficiencyWarning, match="rank 19 < d = 64"):
        plot_eigen_spectrum({"image anchor (I→T)": it, "text anchor (T→I)": ti}, tmp_path / "s.png", title="m / d")
    fig = saved_figures[-1]
    assert fig.png_pixels_std and fig.png_pixels_std > 5
    assert not fig.unreadable(), fig.unreadable()
    assert any("rank-deficient" in t and "rank 19" in t for t in fig.titles)
    from PIL import Image

    assert Image.open(tmp_path / "s.png").size[0] > 300


def test_eigen_spectrum_full_rank_no_warning(tmp_path: Path, saved_figures: list) -> None:
    rng = np.random.default_rng(1)
    img = _unit(rng.standard_normal((200, 16)))
    txt = _unit(img + 0.3 * rng.standard_normal((200, 16)))
    res = spectral_alignment(img, txt)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficiencyWarning)
        plot_eigen_spectrum({"image anchor (I→T)": res}, tmp_path / "s.png")
    assert not any("rank-deficient" in t for t in saved_figures[-1].titles)
    plot_mode_correlations(res, tmp_path / "r.png", title="m / d: per-mode |ρ|")
    assert not saved_figures[-1].unreadable() and saved_figures[-1].png_pixels_std > 5


def test_scatter_labels_do_not_overlap_and_labels_are_readable(tmp_path: Path, saved_figures: list) -> None:
    rng = np.random.default_rng(0)
    models, datasets = ["clip-base", "clip-large", "biomedclip", "pubmedclip"], ["coco", "flickr30k", "roco", "mimic_cxr"]
    labels = [f"{m}/{d}" for m in models for d in datasets]
    x = rng.uniform(0.2, 0.3, len(labels))
    y = 300 + 200 * x + rng.normal(0, 5, len(labels))
    domains = ["natural" if d in ("coco", "flickr30k") else "medical" for _ in models for d in datasets]
    plot_metric_vs_target(x, y, domains, labels, tmp_path / "sc.png", metric_name="sas_sym", target_name="rsum")
    fig = saved_figures[-1]
    assert not fig.unreadable(), fig.unreadable()
    assert "SAS (mean of both directions)" in fig.axis_labels
    assert len(fig.free_text_boxes) == len(labels)
    overlapping = [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(fig.free_text_boxes), 2)
                   if _overlap(a, b)]
    assert not overlapping


def test_small_n_spearman_is_exact_and_starless(tmp_path: Path, saved_figures: list) -> None:
    x, y = [0.20, 0.21, 0.24, 0.25], [337.0, 341.0, 346.0, 357.0]
    res = correlate(x, y, "spearman", n_resamples=0)
    assert res.r == pytest.approx(1.0) and res.p == pytest.approx(2 / 24) and res.p_method == "exact"
    assert significance_stars(res.p) == ""  # was "***" with scipy's t approximation (p ≈ 0)
    kendall = correlate(x, y, "kendall", n_resamples=0)
    assert kendall.p == pytest.approx(2 / 24) and kendall.p_method == "exact"
    pearson = correlate(x, y, "pearson", n_resamples=0)
    assert pearson.p_method == "exact" and pearson.p >= 2 / 24
    # n = 12: seeded permutation test; n = 30: scipy's asymptotic p
    rng = np.random.default_rng(0)
    a = rng.standard_normal(30)
    b = a + rng.standard_normal(30)
    assert correlate(a[:12], b[:12], n_resamples=0).p_method == "permutation"
    big = correlate(a, b, n_resamples=0)
    assert big.p_method == "asymptotic" and significance_stars(big.p) != ""
    plot_metric_vs_target(x, y, ["natural", "natural", "medical", "medical"], ["a/x", "b/x", "a/y", "b/y"],
                          tmp_path / "s4.png", metric_name="sas_it", target_name="rsum_it")
    title = " ".join(saved_figures[-1].titles)
    assert "n = 4" in title and "exact p = 0.083" in title and "*" not in title
