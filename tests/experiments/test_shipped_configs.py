"""Every config shipped in configs/ and the quickstart templates validates against its schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvl.config.alignment import AlignmentStudyConfig
from medvl.config.experiment import ExperimentConfig
from medvl.config.loading import load_config
from medvl.config.training import RunConfig
from medvl.experiments.cell import resolve_cell_config
from medvl.experiments.grid import expand_cells
from medvl.experiments.quickstart import prepare_quickstart

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_validates(path: Path, tmp_path: Path) -> None:
    keys = set(yaml.safe_load(path.read_text()))
    if "stages" in keys:  # an experiment (sweep)
        config = load_config(path, ExperimentConfig)
        for cell in expand_cells(config)[:1]:  # the first stage resolves into a valid run config
            assert isinstance(resolve_cell_config(config, cell, tmp_path, path.parent), RunConfig)
    elif "entries" in keys:  # an alignment study
        assert load_config(path, AlignmentStudyConfig).entries
    else:
        run = load_config(path, RunConfig)
        # a relative data.manifest is relative to the config file: the shipped ones point into the
        # repository's data/ folder, where the README's commands put the data
        assert run.data.manifest.resolve().is_relative_to(CONFIGS.parent / "data"), run.data.manifest


def test_quickstart_configs_resolve_for_every_cell(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.parquet").touch()  # only the path is needed to resolve configs
    experiment = prepare_quickstart(data, tmp_path / "cfg", log=lambda _: None)
    config = load_config(experiment, ExperimentConfig)
    cells = expand_cells(config)
    assert len(cells) == 3 + 4 * 3
    for cell in cells:
        run = resolve_cell_config(config, cell, tmp_path / "sweep", experiment.parent)
        assert run.data.fold == cell.fold
        expected = 0.0 if cell.lam is None else cell.lam
        assert run.objective.balance == pytest.approx(expected)
        assert (run.training.init_weights is None) == (cell.stage == "classifier")
