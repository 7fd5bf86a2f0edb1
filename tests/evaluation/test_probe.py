"""Linear probe: batched L-BFGS vs scikit-learn, shot sampling, protocols on separable data."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError
from medvl.evaluation.probe import evaluate_probe, sample_shots


def test_sample_shots_rule() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    idx = sample_shots(y, 2, seed=3, num_classes=3)
    assert np.bincount(y[idx]).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(idx, sample_shots(y, 2, seed=3, num_classes=3))
    assert sample_shots(y, "all", 0, 3).tolist() == list(range(8))
    with pytest.raises(EmbeddingSetError, match="class 'c'"):
        sample_shots(y, 3, 0, 3, classes=["a", "b", "c"])


def _sets(rng: np.random.Generator, n_cls: int = 3, d: int = 16):
    means = rng.normal(size=(n_cls, d)) * 4

    def make(n: int) -> EmbeddingSet:
        y = np.arange(n) % n_cls
        x = means[y] + rng.normal(size=(n, d))
        return EmbeddingSet.from_arrays(
            x.astype(np.float32), image_features=x[:, ::-1].copy(), labels={"t": y},
            tasks={"t": {"kind": "multiclass", "classes": [f"c{i}" for i in range(n_cls)]}},
        )

    return make(90), make(30), make(60)


@pytest.mark.parametrize("mode", ["search_val_split", "search_fraction", "fixed"])
def test_probe_separable_reaches_high_accuracy(mode: str) -> None:
    train, val, test = _sets(np.random.default_rng(0))
    kw: dict = {"shots": (1, 4, "all"), "seeds": (0, 1), "features": "projected", "c_grid": (1e-2, 1.0, 100.0),
                "refine_points": 1}
    if mode == "fixed":
        kw.update(c_mode="fixed", class_balance=True)
    elif mode == "search_val_split":
        kw.update(val=val)
    res = evaluate_probe(train, test, "t", **kw)
    m = res["metrics"]
    assert m["allshot/accuracy"] >= 0.98
    assert m["4shot/accuracy"] >= 0.9
    assert res["summaries"]["1shot/accuracy"]["n"] == 2
    assert len(res["info"]["chosen_c"]["4shot"]) == 2
    if mode == "fixed":
        assert res["info"]["chosen_c"]["allshot"] == [0.316, 0.316]


def test_probe_errors() -> None:
    train, _, test = _sets(np.random.default_rng(0))
    with pytest.raises(ValueError, match="c_mode"):
        evaluate_probe(train, test, "t", c_mode="magic")
    with pytest.raises(EmbeddingSetError, match="backbone"):
        evaluate_probe(EmbeddingSet.from_arrays(train.image_emb, labels=train.labels, meta=train.meta), test, "t")
    with pytest.raises(EmbeddingSetError, match="only"):
        evaluate_probe(train, test, "t", shots=(1000,), features="projected")


def test_grid_chunked_under_a_memory_budget_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid too large for the solver-memory budget is solved in column chunks, same answer."""
    import medvl.evaluation.probe as probe_module

    train, val, test = _sets(np.random.default_rng(4))
    kw: dict = {"val": val, "shots": (2, "all"), "seeds": (0, 1), "features": "projected",
                "c_grid": tuple(10.0 ** np.arange(-3, 4))}
    whole = evaluate_probe(train, test, "t", **kw)
    monkeypatch.setattr(probe_module, "_SOLVER_MEMORY", 1)  # one C value per batched run
    chunked = evaluate_probe(train, test, "t", **kw)
    assert chunked["info"]["chosen_c"] == whole["info"]["chosen_c"]
    for key, value in whole["metrics"].items():
        assert chunked["metrics"][key] == pytest.approx(value, abs=1e-6)


def test_default_grid_is_the_clip_papers_sweep() -> None:
    # Radford et al. 2021 (CLIP), appendix A.3: 96 logarithmically spaced steps between 1e-6 and 1e6
    from medvl.evaluation.probe import DEFAULT_C_GRID

    np.testing.assert_allclose(DEFAULT_C_GRID, np.logspace(-6, 6, 96))
