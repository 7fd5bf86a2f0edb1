"""Imports flow one way: cli → experiments → evaluation → training → data/objectives/models → config → utils.

An AST scan of every module (module-level and function-level imports alike: a lazy import is
still a dependency) finds each ``medvl.<package>`` it imports and checks the package sits lower
in the order; every package also imports on its own in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "medvl"
#: rank of each top-level package; a module may import packages of lower or equal rank only
#: (data, objectives and models share a rank and must not import each other's ... see ALLOWED_SAME).
RANK = {"utils": 0, "config": 1, "data": 2, "objectives": 2, "models": 2, "training": 3, "evaluation": 4,
        "experiments": 5, "cli": 6}
#: same-rank imports that are allowed (objectives read model outputs' conventions, nothing else)
ALLOWED_SAME: set[tuple[str, str]] = set()


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("medvl.")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("medvl."):
            out.append((node.lineno, node.module))
    return out


def test_imports_respect_the_package_layering() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        pkg = _package_of(path)
        if pkg not in RANK:
            continue
        for line, module in _imports(path):
            target = module.split(".")[1]
            if target not in RANK or target == pkg:
                continue
            if RANK[target] > RANK[pkg] or (RANK[target] == RANK[pkg] and (pkg, target) not in ALLOWED_SAME):
                problems.append(f"{path.relative_to(SRC.parent)}:{line}: {pkg} imports {module}")
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


@pytest.mark.parametrize("package", sorted(RANK))
def test_each_package_imports_alone(package: str) -> None:
    code = f"import medvl.{package}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
