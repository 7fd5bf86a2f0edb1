"""Linear probe: batched L-BFGS vs scikit-learn, shot sampling, protocols on separable data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medvl.evaluation.embeddings import EmbeddingSet, EmbeddingSetError
from medvl.evaluation.probe import draw_shots, evaluate_probe, sample_shots


def test_sample_shots_rule() -> None:
    y = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    idx = sample_shots(y, 2, seed=3, num_classes=3)
    assert np.bincount(y[idx]).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(idx, sample_shots(y, 2, seed=3, num_classes=3))
    assert sample_shots(y, "all", 0, 3).tolist() == list(range(8))
    # too few samples: the class contributes all it has, and the shortfall is reported
    draw = draw_shots(y, 3, 0, 3)
    assert np.bincount(y[draw.indices]).tolist() == [3, 3, 2]
    assert draw.shortfall == {2: 2}
    # the same permutation rule as numpy: per class in index order, rng.permutation(class indices)[:K]
    rng = np.random.default_rng(3)
    expected = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:2] for c in range(3)]))
    np.testing.assert_array_equal(idx, expected)


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
    assert m["t/allshot/accuracy"] >= 0.98
    assert m["t/4shot/accuracy"] >= 0.9
    assert res["summaries"]["t/1shot/accuracy"]["n"] == 2
    assert len(res["info"]["chosen_c"]["4shot"]) == 2
    if mode == "fixed":
        assert res["info"]["chosen_c"]["allshot"] == [0.316, 0.316]


def test_probe_errors() -> None:
    train, _, test = _sets(np.random.default_rng(0))
    with pytest.raises(ValueError, match="c_mode"):
        evaluate_probe(train, test, "t", c_mode="magic")
    with pytest.raises(EmbeddingSetError, match="backbone"):
        evaluate_probe(EmbeddingSet.from_arrays(train.image_emb, labels=train.labels, meta=train.meta), test, "t")
    many = evaluate_probe(train, test, "t", shots=(1000,), features="projected", c_grid=(1.0,), seeds=(0,))
    assert many["info"]["shortfall"] == {"1000shot": {"c0": 24, "c1": 24, "c2": 24}}  # 30 each, 6 held out for C
    assert "t 1000shot: class 'c0' has 24 training samples (< 1000); all 24 used" in many["info"]["notes"]


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


def _multilabel_sets(rng: np.random.Generator, labels: int = 3, d: int = 12):
    means = rng.normal(size=(labels, d)) * 2

    def make(n: int, unannotated: float = 0.0) -> EmbeddingSet:
        y = (rng.random((n, labels)) < 0.4).astype(np.float64)
        x = (y @ means + rng.normal(size=(n, d))).astype(np.float32)
        y[rng.random((n, labels)) < unannotated] = np.nan
        return EmbeddingSet.from_arrays(x, image_features=x, labels={"f": y},
                                        tasks={"f": {"kind": "multilabel", "classes": [f"l{i}" for i in range(labels)]}})

    return make(120, 0.1), make(60), make(200)


def test_multilabel_k_shot_draws_k_positives_per_class() -> None:
    nan = np.nan
    y = np.array([[1, 0], [1, 1], [0, 1], [1, nan], [nan, 1], [0, 0], [1, 0], [0, 1]], dtype=float)
    draw = draw_shots(y, 2, seed=0, num_classes=2)
    pos = np.nan_to_num(y[draw.indices]) == 1
    assert (pos.sum(0) >= 2).all() and draw.shortfall == {}
    short = draw_shots(y, 5, seed=0, num_classes=2)
    assert short.shortfall == {0: 4, 1: 4}  # 4 annotated positives each: all taken
    assert set(short.indices.tolist()) == {0, 1, 2, 3, 4, 6, 7}  # sample 5 is positive for nothing


def test_multilabel_probe_matches_sklearn_one_vs_rest() -> None:
    """A fixed C: test mAP/AUROC equal scikit-learn one-vs-rest LogisticRegression fitted per class on
    its annotated rows; a C search picks the C scikit-learn's validation macro AP picks."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    train, val, test = _multilabel_sets(np.random.default_rng(2))
    xt, yt = train.image_features, train.labels["f"]
    xs, ys = test.image_features, test.labels["f"]
    xv, yv = val.image_features, val.labels["f"]
    grid = (0.01, 0.1, 1.0, 10.0)

    def sklearn_scores(c: float, x_eval: np.ndarray) -> np.ndarray:
        cols = []
        for k in range(3):
            rows = np.isfinite(yt[:, k])
            cols.append(LogisticRegression(C=c, tol=1e-12, max_iter=10000).fit(xt[rows], yt[rows, k]).decision_function(x_eval))
        return np.stack(cols, 1)

    fixed = evaluate_probe(train, test, "f", shots=("all",), seeds=(0,), c_mode="fixed", c_fixed=0.316, tol=1e-10,
                           solver_dtype="float64")
    ref = sklearn_scores(0.316, xs)
    assert fixed["metrics"]["f/allshot/map_macro"] == pytest.approx(
        np.mean([average_precision_score(ys[:, k], ref[:, k]) for k in range(3)]), abs=1e-6)
    assert fixed["metrics"]["f/allshot/auroc_macro"] == pytest.approx(
        np.mean([roc_auc_score(ys[:, k], ref[:, k]) for k in range(3)]), abs=1e-6)
    assert fixed["options"]["classifier"].startswith("one binary logistic regression per class")
    search = evaluate_probe(train, test, "f", val=val, shots=("all",), seeds=(0,), c_grid=grid, tol=1e-10,
                            solver_dtype="float64")
    val_ap = [np.mean([average_precision_score(yv[:, k], s[:, k]) for k in range(3)])
              for s in (sklearn_scores(c, xv) for c in grid)]
    assert search["info"]["chosen_c"]["allshot"] == [grid[int(np.argmax(val_ap))]]
    assert search["options"]["selection_metric"] == "map_macro"


def test_multilabel_few_shot_probe_runs_with_shortfall_notes() -> None:
    train, val, test = _multilabel_sets(np.random.default_rng(3))
    res = evaluate_probe(train, test, "f", val=val, shots=(1, 4, 100), seeds=(0, 1), c_grid=(0.1, 1.0), class_balance=True)
    assert {"f/1shot/map_macro", "f/4shot/auroc_macro", "f/100shot/map_macro"} <= set(res["metrics"])
    assert set(res["info"]["shortfall"]["100shot"]) == {"l0", "l1", "l2"}
    assert any("training positives (< 100)" in note for note in res["info"]["notes"])


def test_unconverged_fits_are_counted_in_the_notes() -> None:
    train, val, test = _sets(np.random.default_rng(0))
    res = evaluate_probe(train, test, "t", val=val, shots=("all",), seeds=(0,), c_grid=(1e3, 1e4), max_iter=1,
                         features="projected")
    assert res["info"]["fits_not_converged"] == 2
    assert "t: 2 of 2 logistic fits stopped at max_iter=1" in res["info"]["notes"][-1]


def test_progress_bar_counts_the_fits(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import medvl.evaluation.probe as probe_module

    bars: list[Any] = []
    make_bar = probe_module._progress_bar

    def recording_bar(task: str, total: int, enabled: bool) -> Any:
        bar = make_bar(task, total, enabled)
        bar.mininterval = 0  # draw every update (tqdm otherwise redraws at most every 0.1 s)
        bars.append(bar)
        return bar

    monkeypatch.setattr(probe_module, "_progress_bar", recording_bar)
    train, val, test = _sets(np.random.default_rng(0))
    evaluate_probe(train, test, "t", val=val, shots=(1, "all"), seeds=(0, 1), c_grid=(0.1, 1.0, 10.0), progress=True,
                   features="projected")
    assert len(bars) == 1 and bars[0].total == 12 and bars[0].n == 12  # 2 shots × 2 seeds × 3 C values
    err = capsys.readouterr().err
    assert "probe t" in err and "12/12" in err


def test_suite_probes_every_task_without_a_val_split_and_says_so() -> None:
    """The README's synthetic data: no val split, an ordinal task whose top grade has 3 training samples
    and a multilabel task. `probe` fits both, names them, and notes the validation fallback and shortfall."""
    from medvl.config.evaluation import EvaluationConfig
    from medvl.evaluation.results import markdown_table, metric_rows, notes_markdown
    from medvl.evaluation.suite import evaluate_embeddings

    rng = np.random.default_rng(0)

    def make(n: int, rare: int) -> EmbeddingSet:
        grade = np.concatenate([np.arange(n - rare) % 3, np.full(rare, 3)])
        findings = (rng.random((n, 2)) < 0.4).astype(np.float64)
        x = (rng.normal(size=(4, 8))[grade] + findings @ rng.normal(size=(2, 8)) + rng.normal(size=(n, 8))).astype(np.float32)
        return EmbeddingSet.from_arrays(
            x, image_features=x, labels={"grade": grade, "findings": findings},
            tasks={"grade": {"kind": "ordinal", "classes": ["0", "1", "2", "3"]},
                   "findings": {"kind": "multilabel", "classes": ["a", "b"]}})

    train, test = make(60, 3), make(30, 2)
    cfg = EvaluationConfig(tasks=["probe"], progress=False, probe={"shots": [1, 4, "all"], "seeds": [0, 1],
                                                                   "c_grid": [0.1, 1.0, 10.0]})
    res = evaluate_embeddings(test, cfg, train=train, val=None)["probe"]
    assert res["info"]["tasks"] == ["grade", "findings"]
    assert {"grade/4shot/accuracy", "grade/allshot/kappa_quadratic", "findings/4shot/map_macro"} <= set(res["metrics"])
    notes = res["info"]["notes"]
    assert notes[0] == "probed: grade (ordinal), findings (multilabel)"
    assert any(n.startswith("grade: no val split, so C is chosen on 20% of the train pool") for n in notes)
    assert "grade 4shot: class '3' has 2 training samples (< 4); all 2 used" in notes  # one of 3 held out for C
    printed = markdown_table(metric_rows({"probe": res})) + notes_markdown({"probe": res})
    assert "| probe | grade/4shot/accuracy |" in printed and "- probe: probed: grade (ordinal)" in printed
    with pytest.raises(EmbeddingSetError, match="no labelled val records"):
        evaluate_embeddings(test, cfg.model_copy(update={"probe": cfg.probe.model_copy(update={"validation": "val_split"})}),
                            train=train, val=None)
