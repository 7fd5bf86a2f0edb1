"""A benchmark's finished runs are tied to what they read: relative model paths are read from the
benchmark YAML's directory (as its manifests are), and re-exported embeddings, embeddings exported
after a run was recorded as skipped, or a retrained checkpoint make those runs stale."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from _bench_tiny import exported_dataset, write_benchmark

from medvl.config.benchmark import BenchmarkConfig
from medvl.experiments.benchmark import run_benchmark, source_fingerprint


def _config(path: Path) -> BenchmarkConfig:
    return BenchmarkConfig.model_validate(yaml.safe_load(path.read_text()))


def _metrics(out: Path, name: str) -> dict[str, object]:
    doc = json.loads((out / "results" / f"{name}.json").read_text())
    return {"metrics": doc["metrics"], "skipped": doc["medvl"].get("skipped")}


def test_relative_embeddings_are_read_from_the_yaml_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    exported_dataset(project, "a")
    bench = write_benchmark(project, ["a"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # run from another directory: paths still mean the YAML's
    summary = run_benchmark(_config(bench), tmp_path / "out", base_dir=project, log=lambda _: None)
    assert summary.ok and sorted(summary.ran) == ["a_exported_probe", "a_exported_retrieval"]
    assert _metrics(tmp_path / "out", "a_exported_retrieval")["skipped"] is None


def test_embeddings_exported_later_or_again_are_picked_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exported_dataset(tmp_path, "a")
    exported_dataset(tmp_path, "b")
    moved = tmp_path / "later_b"
    shutil.move(tmp_path / "exported" / "b", moved)  # b's embeddings are not exported yet
    bench = write_benchmark(tmp_path, ["a", "b"], extra={"on_missing_embeddings": "skip"})  # (default: an error)
    out = tmp_path / "out"
    first = run_benchmark(_config(bench), out, base_dir=tmp_path, log=lambda _: None)
    assert first.ok and "no exported embeddings" in str(_metrics(out, "b_exported_retrieval")["skipped"])
    assert sorted(first.skipped_runs) == ["b_exported_probe", "b_exported_retrieval"]

    shutil.move(moved, tmp_path / "exported" / "b")  # now exported: the skipped runs are stale, a's are not
    second = run_benchmark(_config(bench), out, base_dir=tmp_path, log=lambda _: None)
    assert sorted(second.ran) == ["b_exported_probe", "b_exported_retrieval"]
    assert sorted(second.skipped) == ["a_exported_probe", "a_exported_retrieval"]
    assert _metrics(out, "b_exported_retrieval")["skipped"] is None

    exported_dataset(tmp_path, "a", seed=7)  # re-exported under the same path (other values)
    st = (tmp_path / "exported" / "a" / "test" / "embeddings.safetensors").stat()
    os.utime(tmp_path / "exported" / "a" / "test" / "embeddings.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = run_benchmark(_config(bench), out, base_dir=tmp_path, log=lambda _: None)
    assert sorted(third.ran) == ["a_exported_probe", "a_exported_retrieval"]


def test_source_fingerprint_covers_weights_not_evaluation_outputs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "epoch-1").mkdir(parents=True)
    weights = run / "checkpoints" / "epoch-1" / "model.safetensors"
    weights.write_bytes(b"x" * 10)
    (run / "config.json").write_text("{}")
    before = source_fingerprint(run)
    (run / "eval-test" / "embeddings").mkdir(parents=True)  # what `medvl evaluate` writes inside a run
    (run / "eval-test" / "embeddings" / "e.safetensors").write_bytes(b"y")
    (run / "logs").mkdir()
    (run / "logs" / "epochs.jsonl").write_text("{}\n")
    assert source_fingerprint(run) == before
    weights.write_bytes(b"x" * 11)  # retrained
    assert source_fingerprint(run) != before
    assert source_fingerprint(tmp_path / "nowhere") is None
