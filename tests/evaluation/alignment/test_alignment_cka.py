"""CKA: Kornblith's demo values, invariances, debiased form, blocked == dense."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group

from medvl.evaluation.alignment import AlignmentInputError, kernel_cka, linear_cka
from medvl.evaluation.alignment.dense import dense_cka, dense_linear_cka_gram, rbf_gram


def _kornblith_demo() -> tuple[np.ndarray, np.ndarray]:
    # google-research/google-research:representation_similarity/Demo.ipynb (commit 10bf941):
    # np.random.seed(1337); X = randn(100, 10); Y = randn(100, 10) + X
    # (shared/reference/alignment_metrics_spec.md §6)
    rs = np.random.RandomState(1337)
    x = rs.randn(100, 10)
    y = rs.randn(100, 10) + x
    return x, y


def test_kornblith_demo_values() -> None:
    x, y = _kornblith_demo()
    # Demo.ipynb outputs: linear CKA 0.55761, RBF CKA (threshold 0.5) 0.65483, debiased linear 0.51346.
    assert linear_cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert kernel_cka(x, y, threshold=0.5) == pytest.approx(0.65483, abs=5e-6)
    assert linear_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=5e-6)


def test_feature_space_equals_gram_form(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    for debiased in (False, True):
        ref = dense_linear_cka_gram(x - x.mean(0), y - y.mean(0), debiased)
        assert linear_cka(x, y, debiased=debiased) == pytest.approx(ref, abs=1e-10)
        assert kernel_cka(x, y, kernel="linear", debiased=debiased) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_rbf_blocked_equals_dense(paired: tuple[np.ndarray, np.ndarray], debiased: bool, threshold: float) -> None:
    x, y = paired
    ref = dense_cka(rbf_gram(x, threshold), rbf_gram(y, threshold), debiased)
    assert kernel_cka(x, y, threshold=threshold, debiased=debiased) == pytest.approx(ref, abs=1e-10)
    small = kernel_cka(x, y, threshold=threshold, debiased=debiased, memory_budget=20_000)  # 3-row blocks
    assert small == pytest.approx(ref, abs=1e-10)


def test_invariances(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    q = ortho_group.rvs(16, random_state=0)
    for fn in (linear_cka, lambda a, b: linear_cka(a, b, debiased=True), kernel_cka):
        base = fn(x, y)
        assert fn(x @ q, y) == pytest.approx(base, abs=1e-9)  # orthogonal transform
        assert fn(x, 4.2 * y) == pytest.approx(base, abs=1e-9)  # isotropic scaling
        assert fn(x, x) == pytest.approx(1.0, abs=1e-9)
    # not invariant to an anisotropic scaling
    aniso = y * np.linspace(0.1, 3.0, 16)
    assert abs(linear_cka(x, aniso) - linear_cka(x, y)) > 1e-3


def test_different_dims_allowed_and_errors(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    assert 0.0 < linear_cka(x, y[:, :5]) < 1.0
    with pytest.raises(AlignmentInputError, match="at least 4"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(AlignmentInputError, match="unknown CKA kernel"):
        kernel_cka(x, y, kernel="poly")
    with pytest.raises(AlignmentInputError, match="no variance"):
        linear_cka(np.ones((10, 3)), y[:10])


def test_median_subsample_is_seeded(paired: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = paired
    a = kernel_cka(x, y, median_max_rows=50, seed=3)
    assert a == kernel_cka(x, y, median_max_rows=50, seed=3)
    assert a == pytest.approx(kernel_cka(x, y), abs=0.05)
