"""The commands agree with each other: units, device selection, where outputs go, result names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medvl.cli.main import build_app
from medvl.data.manifest import Manifest, TaskSpec, write_manifest


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("consistency")
    (root / "img").mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(12):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"img/{i}.png", "texts": [f"report {i}", f"second line {i}"],
                     "labels.view": i % 3, "group": f"p{i}", "split": "test" if i < 8 else "train", "fold": -1})
    path = root / "manifest.parquet"
    write_manifest(Manifest(pd.DataFrame(rows), [TaskSpec("view", "multiclass", ("ap", "pa", "lat"))], root=root),
                   path)
    return path


def test_evaluate_then_align_same_embeddings_same_units(tiny_hf_clip_dir: Path, small_manifest: Path,
                                                        tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "eval"
    result = runner.invoke(build_app(), ["evaluate", "--hf-model", str(tiny_hf_clip_dir), "--data", str(small_manifest),
                                         "--out", str(out), "--tasks", "retrieval", "--set", "progress=false"])
    assert result.exit_code == 0, result.output
    # device auto-detected like `train` (accelerator: auto): CPU here, and said so
    assert "(device: cpu)" in result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["provenance"]["config"]["device"] == "cpu" and saved["provenance"]["device"] == "cpu"
    # the EmbeddingSet lands in a readable folder named by model and split, printed for the user
    emb_dir = out / "embeddings" / f"{tiny_hf_clip_dir.name}-test"
    assert f"embeddings (test): {emb_dir}" in result.output
    assert (emb_dir / "embeddings.safetensors").is_file()
    # ... which `medvl align` reads directly; Recall@K is a fraction in both commands
    aligned = runner.invoke(build_app(), ["align", str(emb_dir), "--metrics", "sas", "--out", str(tmp_path / "al")])
    assert aligned.exit_code == 0, aligned.output
    values = json.loads((tmp_path / "al" / f"{emb_dir.name}.json").read_text())["values"]
    retrieval = saved["tasks"]["retrieval"]["metrics"]
    for k in (1, 5, 10):
        assert values[f"r{k}_it"] == pytest.approx(retrieval[f"i2t/recall@{k}"])
        assert values[f"r{k}_ti"] == pytest.approx(retrieval[f"t2i/recall@{k}"])
        assert 0.0 <= values[f"r{k}_it"] <= 1.0
    # CLIP_benchmark's names sit next to medvl's in the CSV (its "image retrieval" = text→image)
    csv = pd.read_csv(out / "metrics.csv", keep_default_na=False).set_index("metric")
    assert csv.loc["t2i/recall@5", "clip_benchmark_name"] == "image_retrieval_recall@5"
    assert csv.loc["i2t/recall@1", "clip_benchmark_name"] == "text_retrieval_recall@1"
    assert csv.loc["i2t/mrr", "clip_benchmark_name"] == ""


def test_clip_benchmark_names() -> None:
    from medvl.evaluation.results import clip_benchmark_name

    assert clip_benchmark_name("retrieval", "i2t/recall@10") == "text_retrieval_recall@10"
    assert clip_benchmark_name("zeroshot", "view/all/accuracy") == "acc1"
    assert clip_benchmark_name("zeroshot", "view/all/accuracy_top5") == "acc5"
    assert clip_benchmark_name("zeroshot", "view/all/balanced_accuracy") == "mean_per_class_recall"
    assert clip_benchmark_name("zeroshot", "findings/all/map_macro") == "mean_average_precision"
    assert clip_benchmark_name("zeroshot", "findings/novel/map_macro") == ""  # no base/novel in CLIP_benchmark
    assert clip_benchmark_name("probe", "view/4shot/accuracy") == "lp_acc1"
    assert clip_benchmark_name("probe", "view/allshot/balanced_accuracy") == "lp_mean_per_class_recall"
    assert clip_benchmark_name("classification", "findings/map_macro") == ""


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from medvl.config.evaluation import EvaluationConfig
    from medvl.utils.devices import resolve_device

    assert EvaluationConfig().device == "auto"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu-please")
