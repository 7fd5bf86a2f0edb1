"""CORAL, MMD², SVCCA, geometry metrics, mutual k-NN: definitions, blocked == dense, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from medvl.evaluation.alignment import (
    AlignmentInputError,
    alignment_uniformity,
    canonical_correlations,
    coral_distance,
    delta_cos,
    mean_paired_l2,
    mmd2_rbf,
    modality_gap,
    mutual_knn,
    rmg_sas_repo,
    rmg_schrodi,
    spectral_alignment_score,
    svcca,
    uniformity,
)
from medvl.evaluation.alignment.dense import (
    dense_delta_cos,
    dense_mmd2_rbf,
    dense_mutual_knn,
    dense_rmg_sas_repo,
    dense_rmg_schrodi,
    dense_uniformity,
)

TINY_BUDGET = 3_000  # forces blocks of one or two rows


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_coral(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    ref = np.linalg.norm(np.cov(x, rowvar=False) - np.cov(y, rowvar=False))
    assert coral_distance(x, y) == pytest.approx(ref, rel=1e-10)
    assert coral_distance(x, y, deep_coral_loss=True) == pytest.approx(ref**2 / (4 * 16**2), rel=1e-10)
    assert coral_distance(x, x + 5.0) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_blocked_equals_dense(paired: tuple[np.ndarray, np.ndarray], unbiased: bool) -> None:
    x, y = paired
    ref = dense_mmd2_rbf(x, y, sigma=2.0, unbiased=unbiased)
    assert mmd2_rbf(x, y, sigma=2.0, unbiased=unbiased) == pytest.approx(ref, abs=1e-12)
    assert mmd2_rbf(x, y, sigma=2.0, unbiased=unbiased, memory_budget=TINY_BUDGET) == pytest.approx(ref, abs=1e-12)


def test_mmd_identical_zero_and_repo_form(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    assert mmd2_rbf(x, x) == pytest.approx(0.0, abs=1e-12)
    assert mmd2_rbf(x, x, unbiased=True) == pytest.approx(0.0, abs=1e-12)
    assert mmd2_rbf(x, y) > 0.01
    # spec §2.3: with σ = 10 on unit-norm rows the kernel is almost linear, k ≈ 1 − ‖a−b‖²/(2σ²), so the
    # SAS repo's MMD = 100·MMD² ≈ 100·‖μx − μy‖²/σ² = ‖μx − μy‖², the squared modality gap
    xu, yu = _unit(x), _unit(y + 1.0)
    repo = mmd2_rbf(xu, yu, sigma=10.0, scale=100.0)
    gap_sq = np.sum((xu.mean(0) - yu.mean(0)) ** 2)
    assert repo == pytest.approx(gap_sq, rel=0.02)


def test_svcca(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    assert svcca(x, x) == pytest.approx(1.0, abs=1e-9)
    assert svcca(x, x @ ortho_group.rvs(16, random_state=2), standardize=False) == pytest.approx(1.0, abs=1e-9)
    # exact reference: mean singular value of U1ᵀU2 from full SVDs of z-scored data
    def top_u(z: np.ndarray, k: int) -> np.ndarray:
        z = (z - z.mean(0)) / (z.std(0, ddof=1) + 1e-8)
        return np.linalg.svd(z, full_matrices=False)[0][:, :k]

    ref = np.linalg.svd(top_u(x, 6).T @ top_u(y, 6), compute_uv=False)
    np.testing.assert_allclose(canonical_correlations(x, y, dims=6), ref, atol=1e-10)
    assert svcca(x, y, dims=6) == svcca(x, y, dims=6)  # deterministic
    assert svcca(x, y[:, :8], dims=6) > 0  # different d allowed
    with pytest.raises(AlignmentInputError, match="dims"):
        svcca(x, y, dims=17)


def test_delta_cos_and_rmg_blocked_equal_dense(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    assert delta_cos(x, y) == pytest.approx(dense_delta_cos(x, y), abs=1e-12)
    assert rmg_schrodi(x, y) == pytest.approx(dense_rmg_schrodi(x, y), abs=1e-12)
    assert rmg_sas_repo(x, y) == pytest.approx(dense_rmg_sas_repo(x, y), abs=1e-12)
    assert rmg_schrodi(x, y) != pytest.approx(rmg_sas_repo(x, y), abs=1e-3)


def test_rmg_schrodi_clip() -> None:
    x = np.random.default_rng(0).standard_normal((20, 4))
    # identical pairs: m = 0 is replaced by 1e-3 (Schrodi's compute_rmg)
    d = (1 - (_unit(x) @ _unit(x).T)[~np.eye(20, dtype=bool)].mean()) / 2
    assert rmg_schrodi(x, x) == pytest.approx(1e-3 / (1e-3 + d), rel=1e-9)


def test_modality_gap_of_shifted_copy() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 8))
    shift = np.array([0.3, -0.4, 0, 0, 0, 0, 0, 1.2])
    assert modality_gap(x, x + shift, normalize=False) == pytest.approx(np.linalg.norm(shift), rel=1e-12)
    assert mean_paired_l2(x, x + shift, normalize=False) == pytest.approx(np.linalg.norm(shift), rel=1e-12)
    assert modality_gap(x, x) == pytest.approx(0.0, abs=1e-12)
    xu, yu = _unit(x), _unit(x + shift)
    assert modality_gap(x, x + shift) == pytest.approx(np.linalg.norm(xu.mean(0) - yu.mean(0)), rel=1e-12)


def test_alignment_uniformity_blocked_equals_dense(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    res = alignment_uniformity(x, y, memory_budget=TINY_BUDGET)
    assert res["uniformity_image"] == pytest.approx(dense_uniformity(x), abs=1e-10)
    assert res["uniformity_text"] == pytest.approx(dense_uniformity(y), abs=1e-10)
    assert res["alignment"] == pytest.approx(np.mean(np.sum((_unit(x) - _unit(y)) ** 2, 1)), abs=1e-12)
    assert alignment_uniformity(x, x)["alignment"] == pytest.approx(0.0, abs=1e-12)
    # collapsed set is maximally non-uniform: log mean exp(0) = 0
    assert uniformity(np.tile([1.0, 0.0], (10, 1))) == pytest.approx(0.0, abs=1e-12)


def test_mutual_knn(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    assert mutual_knn(x, x) == 1.0
    assert mutual_knn(x, 3 * x @ ortho_group.rvs(16, random_state=4)) == pytest.approx(1.0)
    for k in (1, 5, 10):
        ref = dense_mutual_knn(x, y, k)
        assert mutual_knn(x, y, k=k) == pytest.approx(ref)
        assert mutual_knn(x, y, k=k, memory_budget=TINY_BUDGET) == pytest.approx(ref)
    assert mutual_knn(x, y[:, :4], k=5) >= 0  # different d allowed
    with pytest.raises(AlignmentInputError, match="k ≤ n − 1"):
        mutual_knn(x[:5], y[:5], k=5)


def test_error_cases(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    bad = x.copy()
    bad[9, 0] = np.inf
    for fn in (delta_cos, coral_distance, mutual_knn, mmd2_rbf, svcca):
        with pytest.raises(AlignmentInputError, match=r"rows \[9\]"):
            fn(bad, y)
    for fn in (delta_cos, modality_gap, coral_distance, mmd2_rbf, rmg_schrodi):
        with pytest.raises(AlignmentInputError, match="same d"):
            fn(x, y[:, :3])
    with pytest.raises(AlignmentInputError, match="same n"):
        delta_cos(x, y[:-1])
    with pytest.raises(AlignmentInputError, match="at least 2"):
        coral_distance(x[:1], y[:1])
    with pytest.raises(AlignmentInputError, match="2-D"):
        delta_cos(x[0], y[0])
    zero = x.copy()
    zero[[2, 3]] = 0.0
    with pytest.raises(AlignmentInputError, match=r"rows \[2, 3\] have zero norm"):
        delta_cos(zero, y)
    with pytest.raises(AlignmentInputError, match="sigma"):
        mmd2_rbf(x, y, sigma=-1.0)


def test_registry_selection_and_skips(paired: tuple[np.ndarray, np.ndarray]) -> None:
    from medvl.evaluation.alignment import (
        ALIGNMENT_METRICS,
        HIGHER_IS_BETTER,
        METRIC_PRESETS,
        AlignmentOptions,
        compute_alignment_metrics,
        resolve_metric_names,
    )

    x, y = paired
    x0, y0 = x.copy(), y.copy()
    outputs = [c for m in ALIGNMENT_METRICS.values() for c in m.outputs]
    assert set(outputs) == set(HIGHER_IS_BETTER)
    assert resolve_metric_names("paper,mutual_knn,sas") == [*METRIC_PRESETS["paper"], "mutual_knn"]
    rep = compute_alignment_metrics(x, y, "all", AlignmentOptions(knn_k=5))
    assert set(rep.values) == set(outputs) and not rep.skipped
    np.testing.assert_array_equal(x, x0)  # inputs are never modified (float64 blocks alias them)
    np.testing.assert_array_equal(y, y0)
    assert rep.values["sas_it"] == pytest.approx(spectral_alignment_score(x, y))
    assert rep.values["mutual_knn"] == pytest.approx(mutual_knn(x, y, k=5))
    # different d: a preset skips same-space metrics with the reason; naming one is an error
    rep = compute_alignment_metrics(x, y[:, :8], "paper,mutual_knn", AlignmentOptions(svcca_dims=4))
    assert set(rep.values) == {"linear_cka", "svcca", "mutual_knn"}
    assert "needs one embedding space" in rep.skipped["sas"]
    with pytest.raises(AlignmentInputError, match="coral: needs one embedding space"):
        compute_alignment_metrics(x, y[:, :8], ["linear_cka", "coral"])
    with pytest.raises(AlignmentInputError, match="unknown alignment metric 'bogus'"):
        compute_alignment_metrics(x, y, "bogus")


def test_blocked_helpers() -> None:
    import torch

    from medvl.evaluation.alignment.blocked import (
        cross_moments,
        iter_sq_dist_blocks,
        median_sq_distance,
        rows_per_block,
    )

    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 6))
    full = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    # Kornblith's gram_rbf takes np.median over all n² entries, diagonal zeros included
    assert median_sq_distance(torch.from_numpy(x), budget=500) == pytest.approx(np.median(full), rel=1e-12)
    blocks = list(iter_sq_dist_blocks(torch.from_numpy(x), torch.from_numpy(x), same=True, budget=800))
    assert len(blocks) > 1 and max(b.shape[0] for _, b in blocks) == rows_per_block(37, 37, itemsize=8,
                                                                                      n_buffers=2, budget=800)
    np.testing.assert_allclose(np.concatenate([b.numpy() for _, b in blocks]), full, atol=1e-12)
    assert rows_per_block(10, 10**9, itemsize=8, n_buffers=2, budget=1) == 1  # never zero rows
    with pytest.raises(ValueError, match="memory budget"):
        rows_per_block(10, 10, itemsize=8, n_buffers=1, budget=0)
    y = rng.standard_normal((37, 3))
    mom = cross_moments(torch.from_numpy(x), torch.from_numpy(y), budget=300)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert mom.xy is not None and mom.xx is not None
    np.testing.assert_allclose(mom.xy.numpy(), xc.T @ yc, atol=1e-12)
    np.testing.assert_allclose(mom.xx.numpy(), xc.T @ xc, atol=1e-12)
