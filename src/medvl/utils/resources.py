"""Files shipped with medvl (``medvl/resources/<folder>/<name>.yaml``) or the user's own.

Prompt sets, class maps, harmonisation tables and benchmark collections are all named the same
way: a path to a YAML file, or the bare name of one that medvl ships.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["builtin_yaml_names", "read_yaml_source"]


def builtin_yaml_names(folder: str) -> list[str]:
    """Names (without ``.yaml``) of the files shipped in ``medvl/resources/<folder>``, sorted."""
    shipped = resources.files("medvl.resources") / folder
    return sorted(p.name[: -len(".yaml")] for p in shipped.iterdir() if p.name.endswith(".yaml"))


def read_yaml_source(source: str | os.PathLike[str], folder: str, *, what: str, error: type[Exception],
                     existing_path: bool = False) -> tuple[str, str]:
    """``(text, where)`` of a YAML file: ``source`` is a path ending in ``.yaml``/``.yml`` (or, with
    ``existing_path``, any path that exists), else the name of a file shipped in
    ``medvl/resources/<folder>``. ``where`` names the file for error messages. Raises ``error``
    naming the path, or the unknown name and the shipped ones, when there is no such file.
    """
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or (existing_path and path.exists()):
        if not path.is_file():
            raise error(f"{what} not found: {path}")
        return path.read_text(encoding="utf-8"), str(path)
    ref = resources.files("medvl.resources") / folder / f"{source}.yaml"
    if not ref.is_file():
        raise error(f"no built-in {what} {str(source)!r}; built-in {what}s: {builtin_yaml_names(folder)}")
    return ref.read_text(encoding="utf-8"), f"medvl:{folder}/{source}.yaml"
