"""``medvl evaluate --tasks captioning,vqa`` on a tiny CoCa trained on the embedded synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.config.loading import config_from_dict
from medvl.config.training import RunConfig
from medvl.data.manifest import read_manifest, write_manifest
from medvl.data.synthetic import SynthConfig, generate_dataset
from medvl.data.synthetic.vqa import build_synthetic_vqa
from medvl.training.run import run_training

pytest.importorskip("pycocoevalcap")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("coca")
    generate_dataset(root / "data", SynthConfig(n=40, seed=0, size=32, val_fraction=0.15, test_fraction=0.2, n_folds=0))
    manifest = root / "data" / "manifest.parquet"
    vqa = write_manifest(build_synthetic_vqa(read_manifest(manifest)), root / "data" / "vqa.parquet")
    cfg = config_from_dict({
        "name": "tiny-coca", "seed": 0,
        "data": {"manifest": str(manifest), "image_size": 32, "channels": 1, "caption": {"mode": "join"}},
        "model": {"embed_dim": 16,
                  "vision": {"kind": "tiny_vit", "image_size": 32, "patch_size": 8, "in_channels": 1, "width": 16,
                             "depth": 1, "heads": 2},
                  "text": {"kind": "tiny_text", "vocab_size": 256, "max_length": 96, "width": 16, "depth": 1,
                           "heads": 2},
                  "decoder": {"kind": "tiny", "width": 16, "heads": 2, "max_length": 96}},
        "objective": {"balance": 0.5, "terms": [{"name": "clip", "kind": "clip"}, {"name": "cap", "kind": "caption"}]},
        "evaluation": {"validation": {"tasks": []}},
        "training": {"epochs": 1, "batch_size": 16, "validate_at_start": False, "logging": {"progress_bar": False}},
    }, RunConfig)
    run_training(cfg, root / "run")
    return manifest, vqa, root / "run"


def test_evaluate_captioning_and_vqa_write_results_with_provenance(trained: tuple[Path, Path, Path],
                                                                   tmp_path: Path) -> None:
    manifest, vqa, run = trained
    out = tmp_path / "eval"
    result = CliRunner().invoke(build_app(), [
        "evaluate", "--data", str(manifest), "--checkpoint", str(run), "--tasks", "captioning,vqa",
        "--set", f"vqa.manifest={vqa}", "--set", "vqa.epochs=2", "--set", "captioning.max_length=12",
        "--set", "progress=false", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    cap, qa = saved["tasks"]["captioning"], saved["tasks"]["vqa"]
    assert {"bleu_1", "bleu_4", "rouge_l", "cider", "ce/f1_micro", "ce/precision_micro"} <= set(cap["metrics"])
    assert cap["info"]["ce_truth"] == "labels.findings" and cap["info"]["examples"]
    assert {"accuracy", "accuracy_open", "accuracy_closed", "accuracy/presence"} <= set(qa["metrics"])
    assert 0.0 <= qa["metrics"]["accuracy"] <= 1.0 and qa["info"]["n_answers"] > 1
    prov = saved["provenance"]
    assert prov["manifest_hash"] and prov["model"]["kind"] == "medvl" and prov["config"]["vqa"]["epochs"] == 2
    assert "vqa" in (out / "metrics.csv").read_text()


def test_vqa_on_a_manifest_without_questions_is_a_clear_error(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    manifest, _, run = trained
    result = CliRunner().invoke(build_app(), [
        "evaluate", "--data", str(manifest), "--checkpoint", str(run), "--tasks", "vqa", "--set", "progress=false",
        "--out", str(tmp_path / "eval"),
    ])
    assert result.exit_code == 2
    assert "missing column(s) ['question', 'answer'" in result.output


def test_finetuned_vqa_runs(trained: tuple[Path, Path, Path]) -> None:
    from medvl.config.evaluation import EvaluationConfig
    from medvl.evaluation.suite import run_evaluation

    manifest, vqa, run = trained
    cfg = EvaluationConfig.model_validate({"tasks": ["vqa"], "progress": False,
                                           "vqa": {"manifest": str(vqa), "mode": "finetune", "epochs": 1}})
    out = run_evaluation(cfg, manifest=manifest, out_dir=run.parent / "ft", checkpoint=run)
    assert 0.0 <= out["tasks"]["vqa"]["metrics"]["accuracy"] <= 1.0
