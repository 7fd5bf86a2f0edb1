"""``medvl align study`` with a bad entry: exit 2 naming it, nothing written, the corrected command works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import medvl_in_process


def test_bad_entry_fails_before_writing_and_the_fixed_study_runs(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from medvl.evaluation.embeddings import EmbeddingSet

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        image = rng.normal(size=(20, 8))
        EmbeddingSet.from_arrays(image, image + 0.3 * rng.normal(size=(20, 8))).save(tmp_path / "emb" / name)
    study = {"entries": [{"model": "m", "dataset": "a", "embeddings": "emb/a"},
                         {"model": "m", "dataset": "b", "embeddings": "emb/typo"}],
             "metrics": {"metrics": ["sas"]}, "plots": False,
             "correlation": {"bootstrap_resamples": 0, "methods": ["spearman"]}}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    out = tmp_path / "study_out"
    code, stdout, stderr = medvl_in_process(capsys, "align", "study", str(config), "--out", str(out))
    assert code == 2, stdout + stderr
    assert "m/b" in stderr and str(tmp_path / "emb" / "typo") in stderr
    assert "--resume" not in stdout + stderr and not out.exists()  # nothing written, no option it lacks
    study["entries"][1]["embeddings"] = "emb/b"
    config.write_text(yaml.safe_dump(study))
    code, stdout, stderr = medvl_in_process(capsys, "align", "study", str(config), "--out", str(out))
    assert code == 0, stdout + stderr
    assert (out / "results.json").is_file()
    code, stdout, stderr = medvl_in_process(capsys, "align", "study", str(config), "--out", str(out))
    assert code == 2 and "--overwrite" in stderr and "--resume" not in stderr
