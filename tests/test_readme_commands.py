"""Every command of the README's "Using it" table runs, as written, on the README's own demo data.

The table is parsed from README.md, so rows other helpers add are picked up automatically. The
commands run top to bottom in one fresh directory, exactly as a user following the table would
(each row may use what the rows above it made), through the ``medvl`` command line in a
subprocess. The only substitutions are the README's own placeholders (:data:`PLACEHOLDERS`): ``M``
and ``M2`` (a manifest; a new manifest) and ``/data/coco`` (the user's COCO download, here a tiny
copy in COCO's public layout). A placeholder or path this test does not know makes the command
fail, so the README and the test cannot drift apart; there is no list of tolerated failures.

The demo rows are kept small in the README itself (400 images, miniature sweeps), so
that this test runs them unchanged; the long runs (the quickstart study, the measured benchmarking
grid) are documented in docs/ and tested by their own tests.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _coco_layout import write_coco

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MEDVL = [sys.executable, "-m", "medvl.cli.main"]

#: The README's placeholders (whole command-line words) → what they stand for in this test.
PLACEHOLDERS: dict[str, str] = {
    "M": "data/synth/manifest.parquet",
    "M2": "data/m2.parquet",
    "/data/coco": "coco",
}
#: Optional flags the README shows after "or" (``or `--hf-model DIR```) are not commands of their own.
OPTIONAL_PART = re.compile(r"\s*\[[^\]]*\]")


def readme_commands(text: str) -> list[str]:
    """The backticked ``medvl …`` commands of the "Using it" table, in table order, ``[optional]`` parts removed."""
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 2:
            continue
        for command in re.findall(r"`(medvl [^`]+)`", cells[1]):
            commands.append(OPTIONAL_PART.sub("", command).strip())
    return commands


def concrete(command: str) -> list[str]:
    """The command's words with the README's placeholders filled in."""
    return [PLACEHOLDERS.get(word, word) for word in shlex.split(command)]


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_readme_table_is_parsed() -> None:
    assert COMMANDS[0].startswith("medvl data synth --out data/synth")
    assert any(c.startswith("medvl benchmark") for c in COMMANDS)
    assert len(COMMANDS) == len(set(COMMANDS)), "a README command is listed twice"


def test_every_file_a_readme_command_names_is_shipped_or_made_above_it() -> None:
    """Config files a row names exist in the repository; no row names an unknown placeholder."""
    for command in COMMANDS:
        for word in concrete(command):
            if word.startswith("configs/"):
                assert (ROOT / word).is_file(), f"{command}: {word} is not shipped"
            assert not re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\.)?|[A-Z_]+\.yaml", word), (
                f"{command}: {word!r} looks like a placeholder this test does not know; name a real file")


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run every README command top to bottom in one directory; ``{command: (returncode, output, seconds)}``."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "configs", work / "configs")  # the shipped configs, as in a checkout
    write_coco(work / PLACEHOLDERS["/data/coco"])
    # one compute thread per command: beside the suite's other worker, more would oversubscribe the cores
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    results: dict[str, Any] = {}
    for command in COMMANDS:
        args = concrete(command)
        if "--out" in args:  # M2 is "a new manifest": each row that writes it starts from nothing
            target = work / args[args.index("--out") + 1]
            if target.is_file() and args[args.index("--out") + 1] == PLACEHOLDERS["M2"]:
                target.unlink()
        start = time.perf_counter()
        proc = subprocess.run(MEDVL + args[1:], cwd=work, env=env, capture_output=True, text=True, timeout=900)
        results[command] = (proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start)
    timings = "\n".join(f"{seconds:6.1f} s  {command}" for command, (_, _, seconds) in results.items())
    print(f"README commands, wall seconds:\n{timings}")
    return results


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_written(command: str, readme_run: dict[str, Any]) -> None:
    returncode, output, _ = readme_run[command]
    tail = "\n".join(output.strip().splitlines()[-15:])
    assert returncode == 0, f"`{command}` exited {returncode} on the README's demo data:\n{tail}"
