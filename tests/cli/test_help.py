"""``--help`` of every medvl command reads like a conventional CLI (no Python annotations)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from medvl.cli.main import build_app

# typer's own rendering: <bool>, <str>, <list[str]>, <int range>, … and {config} in usage lines
_TYPE_ARTEFACT = re.compile(r"<(?:bool|str|int|float|path|file|dir|list\[[^\]]*\]|int range|float range)>")
_USAGE_BRACES = re.compile(r"Usage:.*\{[a-z_]+\}")


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(build_app())
    paths: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            paths.append([*prefix, name])
            walk(cmd, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "medvl")
def test_help_has_no_annotation_artefacts(path: list[str]) -> None:
    result = CliRunner().invoke(build_app(), [*path, "--help"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert not _TYPE_ARTEFACT.search(text), text
    assert not _USAGE_BRACES.search(text), text


def test_help_uses_conventional_metavars() -> None:
    runner = CliRunner()
    train = runner.invoke(build_app(), ["train", "--help"], env={"COLUMNS": "160"}).output
    assert "Usage: medvl train [OPTIONS] CONFIG" in train
    assert "KEY=VALUE" in train  # --set
    assert re.search(r"--overwrite\s+Delete", train)  # a flag shows no type
    align = runner.invoke(build_app(), ["align", "metrics", "--help"], env={"COLUMNS": "160"}).output
    assert "EMBEDDINGS..." in align and "INTEGER" in align and "FLOAT" in align
    run = runner.invoke(build_app(), ["run", "--help"], env={"COLUMNS": "160"}).output
    assert "[CONFIG]" in run


def test_align_default_command_still_dispatches(tmp_path) -> None:
    result = CliRunner().invoke(build_app(), ["align", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "not an EmbeddingSet directory" in result.output
