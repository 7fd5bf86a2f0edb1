"""A benchmark YAML's relative paths mean its own directory, wherever ``medvl benchmark`` runs from;
command-line paths mean the working directory; and a missing exported-embeddings split is an error
naming model, dataset and file (or, with ``on_missing_embeddings: skip``, a counted skip) — never a
run silently recorded as finished."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from _bench_tiny import exported_dataset, write_benchmark
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.utils.errors import UserInputError


def _bench(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(build_app(), ["benchmark", *args])
    return result.exit_code, result.output


def _results(out: Path) -> dict[str, tuple[int, bytes]]:
    return {p.stem: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((out / "results").glob("*.json"))}


def _skipped(out: Path, key: str) -> object:
    return json.loads((out / "results" / f"{key}.json").read_text())["medvl"]["skipped"]


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp/project`` (manifest + exported embeddings of dataset a, bench.yaml); the cwd is ``tmp/elsewhere``."""
    root = tmp_path / "project"
    exported_dataset(root, "a")
    write_benchmark(root, ["a"])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return root


def test_yaml_model_spec_and_embeddings_are_read_from_the_yaml_directory(
        project: Path, tiny_hf_clip_dir: Path) -> None:
    shutil.copytree(tiny_hf_clip_dir, project / "models" / "clip")
    data = yaml.safe_load((project / "bench.yaml").read_text())
    data["models"].append({"name": "clip", "spec": "models/clip"})
    data["tasks"] = ["retrieval"]
    (project / "bench.yaml").write_text(yaml.safe_dump(data))
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 0, output
    assert "2 ran" in output and "0 recorded as skipped" in output
    for key in ("a_exported_retrieval", "a_clip_retrieval"):
        assert _skipped(Path("out"), key) is None
    doc = json.loads(Path("out/results/a_clip_retrieval.json").read_text())
    assert doc["pretrained"] == str(project / "models" / "clip") and doc["metrics"]["i2t/recall@5"] >= 0
    saved = yaml.safe_load(Path("out/benchmark.yaml").read_text())  # the resolved config reads from anywhere
    assert saved["models"][0]["embeddings"] == str(project / "exported" / "{dataset}" / "{split}")


def test_command_line_paths_next_to_a_yaml_are_relative_to_the_working_directory(project: Path) -> None:
    exported_dataset(Path.cwd(), "a", seed=3)  # ./exported/a/*, next to the cwd, not the YAML
    code, output = _bench([str(project / "bench.yaml"), "--out", "out", "--embeddings", "mine=exported/{dataset}/{split}"])
    assert code == 0, output
    assert _skipped(Path("out"), "a_mine_retrieval") is None
    doc = json.loads(Path("out/results/a_mine_retrieval.json").read_text())
    assert doc["pretrained"] == str(Path.cwd() / "exported" / "{dataset}" / "{split}")


def test_missing_exported_embeddings_are_an_error_before_anything_is_written(project: Path) -> None:
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 0, output
    before = _results(Path("out"))
    data = yaml.safe_load((project / "bench.yaml").read_text())
    data["models"].append({"name": "typo", "embeddings": "exportd/{dataset}/{split}"})
    (project / "bench.yaml").write_text(yaml.safe_dump(data))

    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 2, output
    expected = project / "exportd" / "a" / "test" / "embeddings.json"
    assert "model 'typo' × dataset 'a'" in output and str(expected) in output and "on_missing_embeddings" in output
    assert _results(Path("out")) == before  # nothing already written is touched

    (project / "exported").rename(project / "exportd")  # exported where the template says, minus the probe's train split
    shutil.copytree(project / "exportd", project / "exported")
    shutil.rmtree(project / "exportd" / "a" / "train")
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 2 and "split 'train'" in output and str(project / "exportd" / "a" / "train") in output

    shutil.copytree(project / "exported" / "a" / "train", project / "exportd" / "a" / "train")
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 0, output
    assert sorted(json.loads(Path("out/benchmark_status.json").read_text())["ran"]) == ["a_typo_probe",
                                                                                      "a_typo_retrieval"]
    assert {k: v for k, v in _results(Path("out")).items() if not k.startswith("a_typo")} == before


def test_on_missing_embeddings_skip_is_counted_and_reported_then_rerun(project: Path) -> None:
    exported_dataset(project, "b")
    shutil.move(project / "exported" / "b", project / "later_b")
    write_benchmark(project, ["a", "b"], extra={"on_missing_embeddings": "skip"})
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 0, output
    assert "2 recorded as skipped" in output and "skipped b_exported_retrieval: model 'exported' × dataset 'b'" in output
    reason = str(_skipped(Path("out"), "b_exported_retrieval"))
    assert str(project / "exported" / "b" / "test" / "embeddings.json") in reason
    status = json.loads(Path("out/benchmark_status.json").read_text())
    assert sorted(status["skipped_runs"]) == ["b_exported_probe", "b_exported_retrieval"]
    board = Path("out/leaderboard.md").read_text()
    assert "Skipped runs (2):" in board and "b/retrieval × exported: model 'exported' × dataset 'b'" in board

    shutil.move(project / "later_b", project / "exported" / "b")  # exported now: the skipped runs are run
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 0 and "2 ran, 2 already finished" in output and "0 recorded as skipped" in output
    assert _skipped(Path("out"), "b_exported_retrieval") is None
    assert "Skipped runs" not in Path("out/leaderboard.md").read_text()


def test_a_yaml_spec_found_only_relative_to_the_working_directory_is_an_error(project: Path) -> None:
    (Path.cwd() / "runs" / "x").mkdir(parents=True)  # `runs/x` exists here, not next to the YAML
    write_benchmark(project, ["a"], extra={"models": [{"name": "x", "spec": "runs/x"}]})
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 2 and "runs/x" in output and "working directory" in output and not Path("out").exists()
    write_benchmark(project, ["a"], extra={"models": [{"name": "x", "spec": "runs/deep/x"}]})
    code, output = _bench([str(project / "bench.yaml"), "--out", "out"])
    assert code == 2 and str(project / "runs" / "deep" / "x") + " does not exist" in output and not Path("out").exists()


def test_every_yaml_path_is_resolved_and_references_are_left_alone(tmp_path: Path) -> None:
    from medvl.experiments.benchmark_paths import resolve_benchmark_paths

    base = tmp_path / "bench"
    (base / "models" / "local").mkdir(parents=True)
    (base / "mine").write_text("")  # a prompt file next to the YAML, named without .yaml
    data = {
        "models": [{"name": "hub", "spec": "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"},
                   {"name": "org", "spec": "microsoft/BiomedCLIP"},  # no such directory: a hub repository
                   {"name": "local", "spec": "models/local"},
                   {"name": "run", "spec": "runs/a/b", "eval": {"zeroshot": {"prompts": {"t": "p.yaml"}}}},
                   {"name": "abs", "spec": str(tmp_path / "m")},
                   {"name": "emb", "embeddings": "emb/{dataset}/{split}"}],
        "datasets": [{"name": "d", "manifest": "d/m.parquet", "root": "images",
                      "eval": {"zeroshot": {"prompts": {"t": "chexpert", "u": "../prompts/u.yml", "v": "mine", "w": "p/w"},
                                            "class_maps": {"t": "maps/t.yaml"}}}},
                     {"collection": "cxr-transfer", "data_dir": "cxr"}],
        "eval": {"cache_dir": "cache", "vqa": {"manifest": "vqa.parquet"}, "data": {"root": "/abs/images"}},
    }
    out = resolve_benchmark_paths(data, base)
    assert [m.get("spec") for m in out["models"]] == [
        data["models"][0]["spec"], "microsoft/BiomedCLIP", str(base / "models" / "local"),
        str(base / "runs" / "a" / "b"), str(tmp_path / "m"), None]
    assert out["models"][5]["embeddings"] == str(base / "emb" / "{dataset}" / "{split}")
    assert out["models"][3]["eval"]["zeroshot"]["prompts"]["t"] == str(base / "p.yaml")
    d = out["datasets"][0]
    assert (d["manifest"], d["root"]) == (str(base / "d" / "m.parquet"), str(base / "images"))
    assert d["eval"]["zeroshot"]["prompts"] == {"t": "chexpert", "u": str(base / ".." / "prompts" / "u.yml"),
                                                "v": str(base / "mine"), "w": str(base / "p" / "w")}
    assert d["eval"]["zeroshot"]["class_maps"]["t"] == str(base / "maps" / "t.yaml")
    assert out["datasets"][1]["data_dir"] == str(base / "cxr")
    assert out["eval"] == {"cache_dir": str(base / "cache"), "vqa": {"manifest": str(base / "vqa.parquet")},
                           "data": {"root": "/abs/images"}}
    assert resolve_benchmark_paths(out, tmp_path / "elsewhere") == out  # idempotent: a second base changes nothing
    assert data["models"][2]["spec"] == "models/local"  # the input is not modified


def test_a_job_that_cannot_see_the_exported_embeddings_fails_the_run(tmp_path: Path) -> None:
    """The controller checked them; a job on a node where they are gone records a failure, not a skip."""
    from medvl.config.benchmark import BenchmarkConfig
    from medvl.experiments.benchmark import expand_units, run_unit

    exported_dataset(tmp_path, "a")
    cfg = BenchmarkConfig.model_validate(yaml.safe_load(write_benchmark(tmp_path, ["a"]).read_text()))
    (unit,) = expand_units(cfg, tmp_path)
    shutil.rmtree(tmp_path / "exported" / "a" / "test")
    status = run_unit(unit, str(tmp_path / "out"))
    assert set(status) == {"a_exported_retrieval", "a_exported_probe"}
    assert all(v.startswith("UserInputError: model 'exported' × dataset 'a': no exported embeddings") for v in status.values())
    assert not (tmp_path / "out" / "results").exists()
    with pytest.raises(UserInputError, match="split 'test'"):
        expand_units(cfg, tmp_path)


def test_flags_alone_are_relative_to_the_working_directory_and_hub_ids_stay_as_written(project: Path) -> None:
    exported_dataset(Path.cwd(), "a", seed=3)
    code, output = _bench(["--embeddings", "mine=exported/{dataset}/{split}", "--data", "a=data/a/manifest.parquet",
                           "--model", "hub=hf-hub:example-org/tiny-clip", "--tasks", "retrieval", "--out", "out"])
    assert code == 1, output  # offline: the hub model fails, named as written; the exported one runs
    assert "failed a_hub_retrieval" in output and "hf-hub:example-org/tiny-clip" in output
    assert _skipped(Path("out"), "a_mine_retrieval") is None
    saved = yaml.safe_load(Path("out/benchmark.yaml").read_text())
    assert [m.get("spec") or m.get("embeddings") for m in saved["models"]] == [
        "hf-hub:example-org/tiny-clip", str(Path.cwd() / "exported" / "{dataset}" / "{split}")]
    assert saved["datasets"][0]["manifest"] == str(Path.cwd() / "data" / "a" / "manifest.parquet")
