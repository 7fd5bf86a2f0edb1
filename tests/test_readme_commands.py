"""Every command of the README's "Using it" table runs, as written, on freshly generated synthetic data.

The table is parsed from README.md, so rows other helpers add are picked up automatically. Placeholders
(``M``, ``runs/x``, ``EMB_DIR``, ``CONFIG``, …) are replaced by files this test makes from the synthetic
data; a command that needs data the demo cannot provide (a public dataset's download) is run in the
closest form that can (the adapter listing), as :data:`STAND_INS` says. A README command this test
does not know fails the test: add its stand-in here, so the README and the test cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEDVL = [sys.executable, "-m", "medvl.cli.main"]

#: README command → the command run instead, and why (only where the README's demo data cannot serve).
STAND_INS: dict[str, tuple[str, str]] = {
    "medvl data import coco --root /data/coco --out data/coco/manifest.parquet":
        ("medvl data datasets coco", "COCO is not downloadable here: the adapter's layout/options listing runs"),
    "medvl data label-reports reports.csv --out labels.csv":
        ("medvl data label-reports reports.csv --out labels.csv", "reports.csv is written from the synthetic reports"),
}


#: README commands known to fail on the synthetic data today, with the reason and who fixes it. They are
#: run and reported; when one starts passing, drop it from here.
KNOWN_FAILING: dict[str, str] = {
    "medvl report runs/study": "reads the sweep directory that the (not yet run) sweep row writes",
}
#: README commands this test does not run yet: their inputs (a study config, a quickstart-sized sweep) have no
#: small stand-in here.
NOT_RUN: dict[str, str] = {
    "medvl align study CONFIG": "needs an alignment-study config over several models; no small stand-in yet",
    "medvl sweep EXPERIMENT.yaml --out runs/study": "the shipped experiment is the 12-minute quickstart; no small stand-in yet",
    "medvl sweep configs/benchmarking/experiment.yaml --out runs/benchmarking":
        "the benchmarking grid is a ~16-minute sweep (docs/benchmarking.md); each of its configs runs a few steps in "
        "tests/experiments/test_benchmarking_configs.py",
}


def readme_commands(text: str) -> list[str]:
    """The backticked ``medvl …`` commands of the "Using it" table, with ``[optional]`` parts removed."""
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 2:
            continue
        for command in re.findall(r"`(medvl [^`]+)`", cells[1]):
            commands.append(re.sub(r"\s*\[[^\]]*\]", "", command).strip())
    return commands


def test_readme_table_is_parsed() -> None:
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "medvl data synth --out data/synth --n 2000 --size 128" in commands
    assert any(c.startswith("medvl benchmark") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_on_synthetic_data(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MEDVL_QUICK_TEST": "1"}
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    failures: list[str] = []

    def run(command: str) -> subprocess.CompletedProcess[str]:
        args = shlex.split(command)
        return subprocess.run(MEDVL + args[1:], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)

    # the demo dataset first (smaller than the README's so the test stays minutes, not hours)
    synth = next(c for c in commands if c.startswith("medvl data synth"))
    assert run(synth.replace("--n 2000", "--n 120").replace("--size 128", "--size 32")).returncode == 0
    (tmp_path / "configs").mkdir()
    config = (ROOT / "configs" / "train_synthetic.yaml").read_text(encoding="utf-8")
    config = re.sub(r"epochs: \d+", "epochs: 1", config)
    config = config.replace("image_size: 64", "image_size: 32").replace("vision: {kind: tiny_vit, image_size: 64",
                                                                         "vision: {kind: tiny_vit, image_size: 32")
    (tmp_path / "configs" / "train_synthetic.yaml").write_text(config)
    import pandas as pd

    from medvl.data.manifest import read_manifest

    m = read_manifest(tmp_path / "data/synth/manifest.parquet")
    pd.DataFrame({"id": m.records["id"][:20], "report": [" ".join(t) for t in m.records["texts"][:20]]}).to_csv(
        tmp_path / "reports.csv", index=False)
    placeholders = {" M2 ": " data/m2.parquet ", " M ": " data/synth/manifest.parquet ", "--hf-model DIR": ""}
    ordered = sorted(commands, key=lambda c: (not c.startswith("medvl train"), c.startswith("medvl align")))
    report: list[str] = []
    for command in ordered:
        if command.startswith("medvl data synth"):
            continue
        if command in NOT_RUN:
            report.append(f"not run: {command}: {NOT_RUN[command]}")
            continue
        concrete, why = STAND_INS.get(command, (command, ""))
        concrete = f" {concrete} "
        for key, value in placeholders.items():
            concrete = concrete.replace(key, value)
        concrete = concrete.strip()
        if concrete.split()[:3] in (["medvl", "data", "split"], ["medvl", "data", "subset"], ["medvl", "data", "harmonise"]):
            (tmp_path / "data/m2.parquet").unlink(missing_ok=True)
        if "EMB_DIR" in concrete:  # the embeddings `medvl evaluate` saves (retrieval only: fast)
            out = run("medvl evaluate --checkpoint runs/x --data data/synth/manifest.parquet --tasks retrieval "
                      "--out runs/x/eval-align")
            assert out.returncode == 0, out.stderr
            emb_dirs = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "runs/x/eval-align/embeddings").iterdir())
            concrete = concrete.replace("EMB_DIR..", " ".join(emb_dirs[:1]))
        result = run(concrete)
        ok = result.returncode == 0
        if command in KNOWN_FAILING:
            report.append(f"known: {command}: {'now passes' if ok else 'fails'} ({KNOWN_FAILING[command]})")
        elif not ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            failures.append(f"{command}{f' (as: {concrete}; {why})' if why else ''}: exit {result.returncode}: "
                            + " / ".join(tail))
    print("\n".join(report))
    assert not failures, "README commands that fail on the synthetic data:\n" + "\n".join(failures)
