"""Study pipeline, pairing from EmbeddingSets, correlation statistics, the ``medvl align`` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.config import ConfigError, load_config
from medvl.config.alignment import AlignmentStudyConfig
from medvl.evaluation.alignment import AlignmentInputError
from medvl.evaluation.alignment.correlation import correlate, domain_comparison, one_sample_t
from medvl.evaluation.alignment.pairs import paired_embeddings
from medvl.evaluation.alignment.study import run_study
from medvl.evaluation.embeddings import EmbeddingSet


def make_set(noise: float, seed: int, n: int = 40, d: int = 12, captions: int = 2) -> EmbeddingSet:
    """Images with ``captions`` noisy text views each; more ``noise`` = worse alignment and retrieval."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    image = z + 0.3 * rng.standard_normal((n, d))
    c2i = np.repeat(np.arange(n), captions)
    text = z[c2i] @ np.eye(d) + noise * rng.standard_normal((n * captions, d))
    return EmbeddingSet.from_arrays(image.astype(np.float32), text.astype(np.float32), c2i,
                                    image_ids=[f"img{i}" for i in range(n)], meta={"model": f"m{seed}"})


def test_paired_embeddings_first_and_mean() -> None:
    emb = EmbeddingSet.from_arrays(
        np.eye(3, dtype=np.float32), np.array([[2, 0, 0], [0, 3, 0], [1, 1, 0], [0, 0, 5]], np.float32),
        np.array([1, 0, 0, 2]), image_ids=["a", "b", "c"])
    first = paired_embeddings(emb)
    np.testing.assert_allclose(first.text, [[0, 1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-6)  # image 0: caption 1
    mean = paired_embeddings(emb, caption="mean")
    expect = np.array([0, 1, 0]) + np.array([1, 1, 0]) / np.sqrt(2)
    np.testing.assert_allclose(mean.text[0], expect / np.linalg.norm(expect), atol=1e-6)
    lonely = EmbeddingSet.from_arrays(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)[:2], np.array([0, 0]),
                                      image_ids=["a", "b", "c"])
    with pytest.raises(AlignmentInputError, match="'b', 'c'"):
        paired_embeddings(lonely)
    skipped = paired_embeddings(lonely, on_missing="skip")
    assert skipped.n_skipped == 2 and skipped.image_ids == ["a"]


def test_correlate_matches_scipy_and_ci_is_seeded() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(30)
    y = x + rng.standard_normal(30)
    y[3] = np.nan
    for method, fn in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau), ("pearson", stats.pearsonr)):
        res = correlate(x, y, method, n_resamples=200, seed=1)
        ok = np.isfinite(y)
        ref = fn(x[ok], y[ok])
        assert res.n == 29
        assert res.r == pytest.approx(ref.statistic) and res.p == pytest.approx(ref.pvalue)
        assert res.ci_low < res.r < res.ci_high
        assert res == correlate(x, y, method, n_resamples=200, seed=1)
    assert math.isnan(correlate([1, 2], [3, 4]).r)  # n < 3
    assert math.isnan(correlate([1, 1, 1, 1], [1, 2, 3, 4]).r)  # constant
    cmp = domain_comparison([1, 2, 3], [7, 8, 9, 10])
    assert cmp["mean_a"] == 2 and cmp["std_a"] == pytest.approx(np.std([1, 2, 3]))
    assert cmp["mwu_p"] == pytest.approx(stats.mannwhitneyu([1, 2, 3], [7, 8, 9, 10]).pvalue)
    t = one_sample_t([0.1, 0.2, 0.15, 0.3])
    assert t["p"] == pytest.approx(stats.ttest_1samp([0.1, 0.2, 0.15, 0.3], 0.0).pvalue)


@pytest.fixture()
def study_config(tmp_path: Path) -> Path:
    entries = []
    for m, noise in enumerate((0.2, 0.6, 1.2, 2.5)):
        for ds, dom_seed in (("natset", 0), ("medset", 100)):
            path = tmp_path / "emb" / f"m{m}" / ds
            make_set(noise * (1.5 if ds == "medset" else 1.0), seed=m + dom_seed).save(path)
            entries.append({"model": f"m{m}", "dataset": ds, "embeddings": f"emb/m{m}/{ds}"})
    bench = tmp_path / "emb" / "bench"
    make_set(0.4, seed=77).save(bench)
    entries.append({"model": "bench", "dataset": "medset", "embeddings": "emb/bench", "group": "benchmark"})
    cfg = {
        "output_dir": str(tmp_path / "out"),
        "domains": {"natset": "natural", "medset": "medical"},
        "entries": entries,
        "metrics": {"metrics": ["paper", "mutual_knn"], "knn_k": 5, "sweep_topqs": [0.1, 0.5, 1.0]},
        "correlation": {"bootstrap_resamples": 30, "targets": ["rsum", "rsum_it", "rsum_ti"]},
        "plots": False,  # figures are covered by test_plots (matplotlib is slow on shared CPUs)
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_study(study_config: Path, tmp_path: Path) -> None:
    cfg = load_config(study_config, AlignmentStudyConfig)
    out = run_study(cfg, config_dir=study_config.parent)
    for name in ("results.json", "entries.csv", "entries.md", "correlations.csv", "correlations.md",
                 "domain_tests.md", "sweep.csv", "sweep.md", "config.yaml"):
        assert (out / name).is_file(), name
    res = json.loads((out / "results.json").read_text())
    assert res["medvl_version"] and len(res["entries"]) == 9
    assert res["entries"][0]["source"]["sha256"]
    cols = res["metric_columns"]
    assert cols[:4] == ["sas_it", "sas_ti", "sas_sym", "sas_imbalance"] and "mutual_knn" in cols
    # scopes: 2 datasets + 2 domains + pooled; benchmark entry excluded from the statistics
    corr = res["correlations"]
    assert len(corr) == 5 * len(cols) * 3 * 3
    pooled = next(r for r in corr if r["scope"] == "pooled" and r["metric"] == "sas_sym"
                  and r["target"] == "rsum" and r["method"] == "spearman")
    assert pooled["n"] == 8
    # alignment quality drives retrieval in this synthetic data
    assert pooled["r"] > 0.7 and pooled["ci_low"] <= pooled["r"] <= pooled["ci_high"]
    within = next(r for r in corr if r["scope"] == "dataset=natset" and r["metric"] == "sas_sym"
                  and r["target"] == "rsum" and r["method"] == "spearman")
    assert within["n"] == 4
    entry = res["entries"][0]["row"]
    assert entry["rsum"] == pytest.approx(entry["rsum_it"] + entry["rsum_ti"])
    # R@K is a fraction (as in medvl evaluate); rSum is 100·Σ R@K (the retrieval literature's scale)
    assert 0 <= entry["r1_it"] <= entry["r5_it"] <= entry["r10_it"] <= 1
    assert entry["rsum_it"] == pytest.approx(100 * (entry["r1_it"] + entry["r5_it"] + entry["r10_it"]))
    assert res["entries"][0]["sas"]["it"]["n_kept"] == 2  # d=12, topq=0.1
    assert {r["test"] for r in res["imbalance_tests"]} == {"one_sample_t", "mwu_medical_greater_than_natural"}
    assert len(res["sweep"]["rows"]) == 9 * 3
    assert "Spearman r with rsum" in (out / "correlations.md").read_text()
    bench = [r for r in res["benchmark_models"] if r["metric"] == "delta_cos"]
    assert len(bench) == 1 and bench[0]["model"] == "bench" and bench[0]["n_pooled_dataset"] == 4
    assert isinstance(bench[0]["rank_consistent"], bool)
    with pytest.raises(FileExistsError):
        run_study(cfg, config_dir=study_config.parent)


def test_study_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"entries": [{"model": "a", "dataset": "b"}], "metrics": {"topq": 2}}))
    with pytest.raises(ConfigError) as err:
        load_config(bad, AlignmentStudyConfig)
    assert "metrics.topq" in str(err.value) and "exactly one of 'embeddings'" in str(err.value)
    bad.write_text(yaml.safe_dump({"entries": [{"model": "a", "dataset": "b", "embeddings": "x"}],
                                   "correlation": {"targets": ["r50_it"]}}))
    with pytest.raises(ConfigError, match="unknown retrieval targets"):
        load_config(bad, AlignmentStudyConfig)


def test_cli_metrics_and_study(study_config: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    app = build_app()
    emb = study_config.parent / "emb" / "m0" / "natset"
    rng = np.random.default_rng(0)
    npz = tmp_path / "pair.npz"
    np.savez(npz, image=rng.standard_normal((30, 16)), text=rng.standard_normal((30, 16)))
    out = tmp_path / "align_out"
    result = runner.invoke(app, ["align", str(emb), str(npz), "--metrics", "fast,mutual_knn", "--topq", "0.2",
                                 "--out", str(out), "--per-record", "--sweep"])
    assert result.exit_code == 0, result.output
    assert "sas_it" in result.output and "rsum" in result.output
    saved = json.loads((out / "natset.json").read_text())
    assert saved["options"]["topq"] == 0.2 and "rsum" in saved["values"] and "mutual_knn" in saved["values"]
    assert len(saved["sweep"]) == 10
    per = (out / "natset.per_record_sas.csv").read_text().splitlines()
    assert per[0] == "image_id,sas_it,sas_ti" and per[1].startswith("img0,")
    assert (out / "pair.json").is_file() and (out / "summary.csv").is_file()
    # explicit subcommand form and error reporting
    bad = runner.invoke(app, ["align", "metrics", str(npz), "--metrics", "nope", "--out", str(tmp_path / "o2")])
    assert bad.exit_code != 0 and "unknown alignment metric 'nope'" in bad.output
    study = runner.invoke(app, ["align", "study", str(study_config), "--out", str(tmp_path / "s"),
                                "--set", "correlation.bootstrap_resamples=0", "--set", "metrics.metrics=[sas]",
                                "--set", "correlation.methods=[spearman]"])
    assert study.exit_code == 0, study.output
    assert (tmp_path / "s" / "correlations.csv").is_file() and not (tmp_path / "s" / "plots").exists()
    assert "study" in runner.invoke(app, ["align", "--help"]).output
    missing = runner.invoke(app, ["align", "study", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "config file not found" in missing.output


def test_plots(tmp_path: Path) -> None:
    from medvl.evaluation.alignment import spectral_alignment
    from medvl.evaluation.alignment.plots import (
        plot_eigen_spectrum,
        plot_metric_vs_target,
        plot_mode_correlations,
    )

    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8))
    res = spectral_alignment(x, x + rng.standard_normal((50, 8)), topq=0.3)
    paths = [
        plot_eigen_spectrum({"I→T": res}, tmp_path / "spec.png"),
        plot_mode_correlations(res, tmp_path / "rho.png"),
        plot_metric_vs_target([0.1, 0.2, 0.3, np.nan], [10, 30, 20, 5], ["natural", "medical", "natural", "medical"],
                              ["a", "b", "c", "d"], tmp_path / "scatter.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
