"""Configuration loading: unknown keys, wrong types and overrides name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvl.config import ConfigError, StrictModel, apply_overrides, load_config, save_resolved_config
from medvl.utils.rundir import RunDirExistsError, prepare_run_dir


class Optim(StrictModel):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


class Demo(StrictModel):
    name: str = "demo"
    epochs: int = 3
    optim: Optim = Optim()


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_values(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, {"epochs": 5}), Demo)
    assert cfg.epochs == 5 and cfg.optim.lr == 1e-3


def test_unknown_key_names_path_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"optim": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_config(path, Demo)
    assert "optim.lrr: unknown key" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_names_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"epochs: .*got 'many'"):
        load_config(_write(tmp_path, {"epochs": "many"}), Demo)


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, {}), Demo, overrides=["optim.lr=3e-4", "name=x", "epochs=7"])
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.name == "x" and cfg.epochs == 7


def test_override_unknown_key_is_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optim\.momentum: unknown key"):
        load_config(_write(tmp_path, {}), Demo, overrides=["optim.momentum=0.9"])


def test_override_below_scalar_is_error() -> None:
    with pytest.raises(ConfigError, match="epochs is a int"):
        apply_overrides({"epochs": 3}, ["epochs.x=1"])


def test_override_without_equals_is_error() -> None:
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        apply_overrides({}, ["epochs"])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", Demo)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, Demo)


def test_resolved_config_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, Demo, overrides=["epochs=9"])
    written = save_resolved_config(cfg, tmp_path)
    again = load_config(written, Demo)
    assert again == cfg


def test_run_dir_never_overwritten_without_flag(tmp_path: Path) -> None:
    run = prepare_run_dir(tmp_path / "run")
    (run / "results.json").write_text("{}")
    with pytest.raises(RunDirExistsError, match="--overwrite"):
        prepare_run_dir(run)
    assert (prepare_run_dir(run, resume=True) / "results.json").exists()
    prepare_run_dir(run, overwrite=True)
    assert not (run / "results.json").exists()


def test_misspelt_key_gets_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, {"optim": {"lrr": 0.1}, "epohcs": 2}), Demo)
    message = str(info.value)
    assert "optim.lrr: unknown key; did you mean 'lr'?" in message
    assert "epohcs: unknown key; did you mean 'epochs'?" in message
    with pytest.raises(ConfigError) as far:
        load_config(_write(tmp_path, {"zzzzzz": 1}), Demo)
    assert "did you mean" not in str(far.value)  # nothing close: no guess


def test_did_you_mean_reaches_nested_lists_unions_and_adapter_options() -> None:
    from medvl.config.evaluation import EvaluationConfig
    from medvl.config.training import RunConfig
    from medvl.data.adapters import import_dataset

    with pytest.raises(ConfigError, match=r"probe\.shot: unknown key; did you mean 'shots'\?"):
        load_config(None, EvaluationConfig, ["probe.shot=[1]"])
    with pytest.raises(ConfigError, match=r"terms\.0\.wieght: unknown key; did you mean 'weight'\?"):
        load_config(None, RunConfig, ["objective.terms=[{name: a, kind: clip, wieght: 1}]"])
    with pytest.raises(ConfigError, match=r"tiny_vit\.dpth: unknown key; did you mean 'depth'"):
        load_config(None, RunConfig, ["model.vision.kind=tiny_vit", "model.vision.dpth=2"])
    with pytest.raises(ConfigError, match=r"uncertian: unknown key; did you mean 'uncertain'\?"):
        import_dataset("chexpert", "/nonexistent", {"uncertian": "ones"})
