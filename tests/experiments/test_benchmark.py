"""``medvl benchmark``: 3 models (a medvl run, a tiny HF CLIP, exported embeddings) × 3 synthetic datasets ×
auto tasks from one command; a real SIGKILL mid-grid, then a rerun that recomputes nothing finished."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medvl.experiments.leaderboard import headline_metric

MEDVL = [sys.executable, "-m", "medvl.cli.main"]
TRAIN_YAML = """\
name: tiny
seed: 0
data: {manifest: data/s1/manifest.parquet, image_size: 32, channels: 1, caption: {mode: join}}
model:
  embed_dim: 16
  vision: {kind: tiny_cnn, in_channels: 1, widths: [4, 8]}
  text: {kind: tiny_text, vocab_size: 256, max_length: 32, width: 16, depth: 1, heads: 2}
  classifiers: {findings: {kind: multilabel, num_classes: 10}}
objective:
  balance: 0.5
  terms: [{name: clip, kind: clip}, {name: bce, kind: bce, options: {task: findings}}]
training:
  epochs: 1
  batch_size: 16
  precision: "32"
  accelerator: cpu
  logging: {every_n_steps: 5, tensorboard: false, progress_bar: false}
"""
BENCH_YAML = """\
models:
  - {name: tiny-run, spec: runs/tiny}
  - {name: tiny-clip, spec: %s}
  - {name: exported, embeddings: "exported/{dataset}/{split}"}
datasets:
  - {name: s1, manifest: data/s1/manifest.parquet}
  - {name: s2, manifest: data/s2/manifest.parquet}
  - {name: s3, manifest: data/s3/manifest.parquet}
tasks: auto
eval:
  batch_size: 16
  probe: {shots: [all], seeds: [0], c_grid: [0.1, 1.0], features: projected, validation: train_fraction}
jobs: 1
on_missing_embeddings: skip
"""


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(MEDVL + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _export(root: Path, dataset: str) -> None:
    from medvl.data.manifest import read_manifest
    from medvl.evaluation.embeddings import EmbeddingSet

    rng = np.random.default_rng(0)
    m = read_manifest(root / "data" / dataset / "manifest.parquet")
    for split in ("train", "val", "test"):
        part = m.split(split)
        texts = list(part.records["texts"])
        c2i = np.concatenate([[i] * len(t) for i, t in enumerate(texts)]).astype(np.int64)
        emb = EmbeddingSet.from_arrays(
            rng.normal(size=(len(part), 12)).astype(np.float32), rng.normal(size=(len(c2i), 12)).astype(np.float32), c2i,
            labels={t: part.label_matrix(t) for t in m.tasks}, tasks={k: v.to_dict() for k, v in m.tasks.items()},
            image_ids=list(part.records["id"]))
        emb.save(root / "exported" / dataset / split)


@pytest.mark.slow
def test_benchmark_grid_resumes_after_sigkill(tmp_path: Path, tiny_hf_clip_dir: Path) -> None:
    for seed in (1, 2, 3):
        r = _cli(["data", "synth", "--out", f"data/s{seed}", "--n", "48", "--size", "32", "--seed", str(seed),
                  "--val-fraction", "0.15", "--folds", "0"], tmp_path)
        assert r.returncode == 0, r.stderr
    (tmp_path / "train.yaml").write_text(TRAIN_YAML)
    r = _cli(["train", "train.yaml", "--out", "runs/tiny"], tmp_path)
    assert r.returncode == 0, r.stderr
    for dataset in ("s1", "s2"):  # s3 has no exported embeddings: those runs are recorded as skipped (as asked)
        _export(tmp_path, dataset)
    (tmp_path / "bench.yaml").write_text(BENCH_YAML % tiny_hf_clip_dir)

    # first run, killed with SIGKILL once a few results exist
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([*MEDVL, "benchmark", "bench.yaml", "--out", "out"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = tmp_path / "out" / "results"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(results.glob("*.json"))) < 3:
        time.sleep(0.05)
    assert proc.poll() is None, "the benchmark ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.glob("*.json")}
    assert len(finished) >= 3

    # the rerun recomputes nothing finished, completes the grid and writes the leaderboard
    r = _cli(["benchmark", "bench.yaml", "--out", "out", "--jobs", "2"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for name, (mtime, content) in finished.items():
        assert (results / name).stat().st_mtime_ns == mtime and (results / name).read_bytes() == content, name
    status = json.loads((tmp_path / "out" / "benchmark_status.json").read_text())
    assert {Path(n).stem for n in finished} <= set(status["skipped"])
    assert not set(status["ran"]) & {Path(n).stem for n in finished}
    all_runs = sorted(p.stem for p in results.glob("*.json"))
    assert len(all_runs) == 3 * 3 * 4  # synthetic sets: retrieval, zeroshot, probe, classification
    doc = json.loads((results / "s1_tiny-clip_zeroshot.json").read_text())
    assert doc["task"] == "zeroshot_classification" and doc["model"] == "tiny-clip" and doc["dataset"] == "s1"
    assert doc["medvl"]["provenance"]["manifest_hash"] and doc["metrics"]
    skipped = json.loads((results / "s3_exported_retrieval.json").read_text())["medvl"]["skipped"]
    assert "no exported embeddings" in skipped
    assert {f"s3_exported_{t}" for t in ("retrieval", "probe")} <= set(status["skipped_runs"])
    retrieval = json.loads((results / "s2_tiny-run_retrieval.json").read_text())
    assert "image_retrieval_recall@5" in retrieval["clip_benchmark_metrics"]
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.png", "benchmark.csv"):
        assert (tmp_path / "out" / name).is_file(), name
    board = (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()
    assert board[0].startswith("model,") and "mean_rank" in board[0] and len(board) == 4

    # a third run has nothing left to do
    again = _cli(["benchmark", "bench.yaml", "--out", "out"], tmp_path)
    assert again.returncode == 0 and "0 ran, 36 already finished" in again.stdout


def test_headline_metrics() -> None:
    assert headline_metric("retrieval", {"i2t/recall@5": 0.2, "t2i/recall@5": 0.4, "i2t/recall@1": 0.1}) == pytest.approx(0.3)
    assert headline_metric("probe", {"1shot/balanced_accuracy": 0.3, "16shot/balanced_accuracy": 0.6}) == 0.6
    assert headline_metric("probe", {"allshot/balanced_accuracy": 0.7, "16shot/balanced_accuracy": 0.6}) == 0.7
    # the probe names its task: <task>/<K>shot/<metric>; the largest K of every task, averaged
    assert headline_metric("probe", {"a/2shot/balanced_accuracy": 0.1, "a/16shot/balanced_accuracy": 0.6,
                                     "b/16shot/balanced_accuracy": 0.8}) == pytest.approx(0.7)
    assert headline_metric("probe", {"f/allshot/map_macro": 0.4, "f/4shot/map_macro": 0.2}) == 0.4
    assert headline_metric("zeroshot", {"severity/all/balanced_accuracy": 0.5, "findings/all/map_macro": 0.9}) == 0.5
    assert headline_metric("classification", {"findings/map_macro": float("nan")}) is None


def test_benchmark_config_errors_before_writing(tmp_path: Path) -> None:
    (tmp_path / "bench.yaml").write_text("models: [{name: a, spec: nowhere}]\n"
                                         "datasets: [{name: d, manifest: missing.parquet}]\n")
    r = _cli(["benchmark", "bench.yaml", "--out", "out"], tmp_path)
    assert r.returncode == 2 and "missing.parquet does not exist" in r.stderr and not (tmp_path / "out").exists()
    (tmp_path / "bad.yaml").write_text("models: [{name: a, spec: x, embeddings: y}]\ndatasets: [{name: d, manifest: m}]\n")
    r = _cli(["benchmark", "bad.yaml", "--out", "out"], tmp_path)
    assert r.returncode == 2 and "exactly one of spec or embeddings" in r.stderr


def test_shipped_collections_resolve(tmp_path: Path) -> None:
    from medvl.config.benchmark import BenchmarkConfig
    from medvl.config.evaluation import EvaluationConfig
    from medvl.experiments.benchmark import expand_units, load_collection
    from medvl.utils.errors import UserInputError

    dlilp = load_collection("cxr-transfer")
    assert [d["name"] for d in dlilp["datasets"]] == ["chexpert_5x200", "mimic_5x200", "rsna", "siim", "covid", "nih_lt",
                                                      "vindr_pcxr"]
    assert [d["classes"] for d in dlilp["datasets"]] == [5, 5, 2, 2, 4, 20, 5]  # DLILP Table 1
    for d in dlilp["datasets"]:
        probe = EvaluationConfig.model_validate(d["eval"]).probe
        assert probe.shots == [1, 2, 4, 8, 16] and probe.c_fixed == 0.316 and probe.class_balance
    assert len(load_collection("benchmarking-25")["datasets"]) == 25
    from medvl.data.adapters import ADAPTERS

    for collection in ("cxr-transfer", "benchmarking-25"):  # every prepare command imports with a shipped adapter
        for d in load_collection(collection)["datasets"]:
            for name in re.findall(r"medvl data import (\S+)", str(d.get("prepare", ""))):
                assert name in ADAPTERS, (collection, d["name"], name)
    nih_lt = next(d for d in dlilp["datasets"] if d["name"] == "nih_lt")
    from medvl.data.adapters.nih_lt import NOVEL

    assert tuple(nih_lt["novel"]) == NOVEL and "protocol=dlilp" in nih_lt["prepare"]
    cfg = BenchmarkConfig.model_validate({"models": [{"name": "m", "spec": "x"}],
                                          "datasets": [{"collection": "cxr-transfer", "data_dir": str(tmp_path)}]})
    with pytest.raises(UserInputError, match=r"missing manifests[\s\S]*covid_balanced\.parquet[\s\S]*dlilp|prepare"):
        expand_units(cfg, tmp_path)
