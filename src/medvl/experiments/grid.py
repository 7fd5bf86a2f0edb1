"""Cells of an experiment: one training run per stage × λ × fold × seed.

Cells are listed in dependency order (a stage's cells after the cells they start from), each
with a stable directory ``<stage>/lambda=<λ>/fold=<k>/seed=<s>`` (``lambda=-`` for stages that do
not vary λ), so a rerun finds what is already finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from medvl.config.experiment import ExperimentConfig, StageSpec

__all__ = ["Cell", "expand_cells", "format_lambda", "parent_cell", "substitute_placeholders"]


def format_lambda(value: float | None) -> str:
    """Canonical text of a λ value: ``0.9`` → ``"0.9"``, ``1`` → ``"1.0"``, ``None`` → ``"-"``."""
    if value is None:
        return "-"
    return repr(float(value))


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    stage: str
    lam: float | None
    fold: int
    seed: int

    @property
    def relpath(self) -> PurePosixPath:
        """Directory of this cell, relative to the sweep directory."""
        return PurePosixPath(self.stage, f"lambda={format_lambda(self.lam)}", f"fold={self.fold}", f"seed={self.seed}")

    @property
    def key(self) -> str:
        """A readable unique name, e.g. ``tune[λ=0.9,fold=0,seed=0]``."""
        return f"{self.stage}[λ={format_lambda(self.lam)},fold={self.fold},seed={self.seed}]"

    def as_dict(self) -> dict[str, object]:
        """JSON form stored in every cell's results."""
        return {"stage": self.stage, "lambda": self.lam, "fold": self.fold, "seed": self.seed}


def expand_cells(config: ExperimentConfig) -> list[Cell]:
    """All cells in run order: stage by stage, then fold, seed and λ."""
    cells: list[Cell] = []
    for stage in config.stages:
        lambdas: list[float | None] = list(config.grid.lambdas) if stage.over_lambda else [None]
        for fold in config.grid.folds:
            for seed in config.grid.seeds:
                cells.extend(Cell(stage.name, lam, fold, seed) for lam in lambdas)
    return cells


def parent_cell(config: ExperimentConfig, cell: Cell) -> Cell | None:
    """The cell whose weights ``cell`` starts from (same fold and seed), if its stage has ``init_from``."""
    stage = _stage(config, cell.stage)
    if stage.init_from is None:
        return None
    parent_stage = _stage(config, stage.init_from)
    lam = cell.lam if parent_stage.over_lambda else None
    return Cell(parent_stage.name, lam, cell.fold, cell.seed)


def _stage(config: ExperimentConfig, name: str) -> StageSpec:
    for stage in config.stages:
        if stage.name == name:
            return stage
    raise KeyError(f"no stage named {name!r}")


def substitute_placeholders(overrides: list[str], cell: Cell) -> list[str]:
    """Fill ``{lambda}``, ``{fold}``, ``{seed}`` and ``{stage}`` in override strings.

    A ``{lambda}`` placeholder in a stage that does not vary λ is an error (it has no value).
    """
    values = {"fold": str(cell.fold), "seed": str(cell.seed), "stage": cell.stage}
    result = []
    for item in overrides:
        if "{lambda}" in item:
            if cell.lam is None:
                raise ValueError(f"stage {cell.stage!r} has over_lambda: false but override {item!r} uses {{lambda}}")
            item = item.replace("{lambda}", format_lambda(cell.lam))
        for name, value in values.items():
            item = item.replace("{" + name + "}", value)
        result.append(item)
    return result
