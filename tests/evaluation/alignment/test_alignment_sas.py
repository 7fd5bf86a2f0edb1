"""Spectral Alignment Score: the spec's numbers, invariances, per-record decomposition, sweep."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from medvl.evaluation.alignment import (
    AlignmentInputError,
    kept_mode_count,
    sas_directional,
    sas_per_record,
    sas_topq_sweep,
    spectral_alignment,
    spectral_alignment_score,
)
from medvl.evaluation.alignment.dense import dense_sas
from medvl.evaluation.alignment.sas import sas_from_stats, spectral_stats

# shared/reference/alignment_metrics_spec.md §1.4: float64 numpy mirror of the reference
# `spectral_alignment_score` (iamalegambetti/medical-vlms-assessment:metrics.py), rng 123, n=2000, d=64.
SPEC_VALUES = {
    0.1: (0.199968, 0.217792),
    0.5: (0.186035, 0.220544),
    1.0: (0.184464, 0.208256),
}


@pytest.mark.parametrize("topq", sorted(SPEC_VALUES))
def test_spec_synthetic_values(spec_xy: tuple[np.ndarray, np.ndarray], topq: float) -> None:
    x, y = spec_xy
    xy, yx = SPEC_VALUES[topq]
    assert spectral_alignment_score(x, y, topq) == pytest.approx(xy, abs=1e-6)
    assert spectral_alignment_score(y, x, topq) == pytest.approx(yx, abs=1e-6)


def test_spec_synthetic_float32_and_kept(spec_xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = spec_xy
    res = spectral_alignment(x.astype(np.float32), y.astype(np.float32), topq=0.1)
    assert res.n_kept == 7  # spec §1.4: "q=0.1 (k=7 modes kept)"
    assert res.score == pytest.approx(0.199968, abs=1e-5)  # spec: float32 agrees to ~1e-5
    # SAS(X→X) = 0.999999 in the spec's mirror (the 1e-8 keeps it below 1)
    assert spectral_alignment_score(x, x) == pytest.approx(0.999999, abs=1e-6)
    assert spectral_alignment_score(x, x) < 1.0


def test_without_eps_rho_is_pearson(spec_xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = spec_xy
    st = spectral_stats(x, y, eps=0.0)
    xc, yc = x - x.mean(0), y - y.mean(0)
    zx, zy = xc @ st.eigenvectors, yc @ st.eigenvectors
    pearson = np.array([np.corrcoef(zx[:, k], zy[:, k])[0, 1] for k in range(5)])
    np.testing.assert_allclose(st.rho[:5], pearson, atol=1e-10)
    with_eps = spectral_stats(x, y)
    gap = np.abs(with_eps.rho - st.rho).max()
    assert 1e-6 < gap < 1e-3  # spec §1.4: largest gap 8.7e-5
    assert gap == pytest.approx(8.7e-5, rel=0.05)


# shared/reference/alignment_metrics_spec.md §1.2 table (numpy 'linear' quantile, distinct eigenvalues).
KEPT_TABLE = {
    512: [52, 103, 154, 205, 256, 307, 358, 409, 460, 512],
    640: [64, 128, 192, 256, 320, 384, 448, 512, 576, 640],
    768: [77, 154, 231, 307, 384, 461, 537, 614, 691, 768],
    1024: [103, 205, 307, 410, 512, 614, 717, 819, 921, 1024],
    1152: [116, 231, 346, 461, 576, 691, 806, 921, 1036, 1152],
}


@pytest.mark.parametrize("d", sorted(KEPT_TABLE))
def test_kept_mode_counts_table(d: int) -> None:
    spectrum = np.sort(np.random.default_rng(d).exponential(size=d))[::-1]
    counts = [kept_mode_count(spectrum, round(i * 0.1, 1)) for i in range(1, 11)]
    assert counts == KEPT_TABLE[d]


def test_kept_modes_on_real_decomposition() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 64))
    y = x + rng.standard_normal((400, 64))
    for q in (0.1, 0.3, 0.7):
        assert spectral_alignment(x, y, topq=q).n_kept == 64 - math.ceil((1 - q) * 63)


def test_self_alignment_is_one(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = paired
    assert spectral_alignment_score(x, x) == pytest.approx(1.0, abs=1e-6)
    assert spectral_alignment_score(x, 3.0 * x + 1.0) == pytest.approx(1.0, abs=1e-6)


def test_invariances(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    base = spectral_alignment_score(x, y, 0.3)
    # global rescaling of Y (and a shift: each set is centred on its own mean)
    assert spectral_alignment_score(x, 7.5 * y - 2.0, 0.3) == pytest.approx(base, abs=1e-9)
    # rotating both sets together leaves the geometry unchanged
    q = ortho_group.rvs(16, random_state=1)
    assert spectral_alignment_score(x @ q, y @ q, 0.3) == pytest.approx(base, abs=1e-9)
    # rotating Y alone changes the score
    assert abs(spectral_alignment_score(x, y @ q, 0.3) - base) > 1e-2
    # asymmetric
    assert abs(spectral_alignment_score(y, x, 0.3) - base) > 1e-3


def test_eigenvector_sign_invariance(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    st = spectral_stats(x, y)
    flip = np.where(np.arange(st.eigenvectors.shape[1]) % 2 == 0, -1.0, 1.0)
    v = st.eigenvectors * flip
    zx, zy = (x - x.mean(0)) @ v, (y - y.mean(0)) @ v
    cov = (zx * zy).mean(0)
    rho = cov / np.sqrt(st.eigenvalues * (zy**2).mean(0) + st.eps)
    np.testing.assert_allclose(np.abs(rho), np.abs(st.rho), atol=1e-12)
    flipped = type(st)(**{**st.__dict__, "eigenvectors": v, "rho": rho})
    assert sas_from_stats(flipped, 0.2).score == pytest.approx(sas_from_stats(st, 0.2).score, abs=1e-12)


def test_matches_dense_pseudocode_and_blocks(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    for q in (0.1, 0.5, 1.0):
        ref = dense_sas(x, y, q)
        assert spectral_alignment_score(x, y, q) == pytest.approx(ref, abs=1e-12)
        assert spectral_alignment_score(x, y, q, memory_budget=2_000) == pytest.approx(ref, abs=1e-12)
    assert spectral_alignment_score(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(dense_sas(x, y))


def test_directional_and_sweep(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    d = sas_directional(x, y, topq=0.2)
    assert d["sas_it"] == pytest.approx(spectral_alignment_score(x, y, 0.2))
    assert d["sas_ti"] == pytest.approx(spectral_alignment_score(y, x, 0.2))
    assert d["sas_sym"] == pytest.approx((d["sas_it"] + d["sas_ti"]) / 2)
    assert d["sas_imbalance"] == pytest.approx(d["sas_it"] - d["sas_ti"])
    sweep = sas_topq_sweep(x, y)
    assert [r["topq"] for r in sweep] == [round(i * 0.1, 1) for i in range(1, 11)]
    row = sweep[1]
    assert row["sas_it"] == pytest.approx(d["sas_it"]) and row["sas_ti"] == pytest.approx(d["sas_ti"])
    assert sweep[-1]["n_kept_it"] == 16


def test_per_record_mean_equals_score(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    for q, eps in ((0.1, 1e-8), (0.5, 1e-8), (1.0, 0.0)):
        per = sas_per_record(x, y, topq=q, eps=eps, memory_budget=3_000)
        assert per.shape == (120,)
        assert per.mean() == pytest.approx(spectral_alignment_score(x, y, q, eps=eps), abs=1e-12)
    # records that follow the shared structure score higher than records whose text was replaced
    rng = np.random.default_rng(3)
    y2 = y.copy()
    y2[:30] = rng.standard_normal((30, 16)) * y.std()
    per = sas_per_record(x, y2, topq=0.5)
    assert per[:30].mean() < per[30:].mean()


def test_errors(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    with pytest.raises(AlignmentInputError, match="topq"):
        spectral_alignment_score(x, y, 0.0)
    with pytest.raises(AlignmentInputError, match="same d"):
        spectral_alignment_score(x, y[:, :8])
    with pytest.raises(AlignmentInputError, match="same n"):
        spectral_alignment_score(x, y[:50])
    with pytest.raises(AlignmentInputError, match="at least 2"):
        spectral_alignment_score(x[:1], y[:1])
    bad = y.copy()
    bad[[4, 17], 2] = np.nan
    with pytest.raises(AlignmentInputError, match=r"rows \[4, 17\]"):
        spectral_alignment_score(x, bad)
    with pytest.raises(AlignmentInputError, match="no variance"):
        spectral_alignment_score(np.ones((10, 4)), np.random.default_rng(0).standard_normal((10, 4)))
