"""``read_yaml_source``: a YAML path or the name of a file medvl ships, with errors that name what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvl.utils.resources import builtin_yaml_names, read_yaml_source


class _Missing(ValueError):
    pass


def test_a_path_is_read_and_named(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("a: 1\n")
    assert read_yaml_source(f, "prompts", what="prompt file", error=_Missing) == ("a: 1\n", str(f))
    with pytest.raises(_Missing, match=r"prompt file not found: .*other\.yml"):
        read_yaml_source(tmp_path / "other.yml", "prompts", what="prompt file", error=_Missing)


def test_a_shipped_name_is_read_and_an_unknown_one_lists_the_shipped() -> None:
    shipped = builtin_yaml_names("harmonisation")
    assert "cxr" in shipped and shipped == sorted(shipped)
    text, where = read_yaml_source("cxr", "harmonisation", what="harmonisation table", error=_Missing)
    assert where == "medvl:harmonisation/cxr.yaml" and "classes" in text
    with pytest.raises(_Missing, match=r"no built-in harmonisation table 'cxx'; built-in harmonisation tables: \['cxr'"):
        read_yaml_source("cxx", "harmonisation", what="harmonisation table", error=_Missing)


def test_existing_path_accepts_any_existing_file_name(tmp_path: Path) -> None:
    f = tmp_path / "prompts.txt"
    f.write_text("x: 1\n")
    assert read_yaml_source(f, "prompts", what="prompt file", error=_Missing, existing_path=True)[1] == str(f)
    with pytest.raises(_Missing, match="no built-in prompt file"):
        read_yaml_source(f, "prompts", what="prompt file", error=_Missing)
    with pytest.raises(_Missing, match="prompt file not found"):
        read_yaml_source(tmp_path, "prompts", what="prompt file", error=_Missing, existing_path=True)
