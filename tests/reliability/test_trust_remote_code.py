"""Issue 12: no code from a model directory runs unless the user passed an explicit flag.

A Hugging Face directory whose ``config.json`` has an ``auto_map`` ships its own Python modules.
transformers, when ``trust_remote_code`` is left unset, *asks* on the terminal (``input()``) and
runs the code on "y"; medvl passes ``trust_remote_code=False`` explicitly to every
``from_pretrained``, refuses such a directory with a message naming ``--trust-remote-code``, runs
the code only with that flag, and records the setting in the results' provenance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from _families import write_manifest
from medvl.cli.main import build_app
from medvl.models.loading import ModelLoadError, load_model

CONFIG_CODE = '''
import os
from pathlib import Path
Path(os.environ["MEDVL_REMOTE_CODE_MARKER"]).write_text("ran")
from transformers import CLIPConfig


class ShipsCodeConfig(CLIPConfig):
    model_type = "ships_code_clip"
'''
MODEL_CODE = '''
from transformers import CLIPModel
from .configuration_ships_code import ShipsCodeConfig


class ShipsCodeModel(CLIPModel):
    config_class = ShipsCodeConfig
'''


@pytest.fixture()
def remote_code_dir(tmp_path: Path, family_dir: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny CLIP checkpoint turned into a directory that ships its own code (auto_map)."""
    import shutil

    import transformers.dynamic_module_utils as dyn

    source = family_dir("clip")
    target = tmp_path / "ships_code"
    shutil.copytree(source, target)
    (target / "configuration_ships_code.py").write_text(CONFIG_CODE)
    (target / "modeling_ships_code.py").write_text(MODEL_CODE)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = "ships_code_clip"
    config["auto_map"] = {"AutoConfig": "configuration_ships_code.ShipsCodeConfig",
                          "AutoModel": "modeling_ships_code.ShipsCodeModel"}
    (target / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "remote_code_ran"
    monkeypatch.setenv("MEDVL_REMOTE_CODE_MARKER", str(marker))
    monkeypatch.setattr(dyn, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    # a user at a terminal who answers "y" to transformers' prompt (what happens without an explicit flag)
    monkeypatch.setattr("builtins.input", lambda *_: "y")
    return target


def test_model_directory_code_does_not_run_without_the_flag(remote_code_dir: Path) -> None:
    marker = Path(__import__("os").environ["MEDVL_REMOTE_CODE_MARKER"])
    with pytest.raises(ModelLoadError, match="--trust-remote-code"):
        load_model(remote_code_dir)
    # the old entry point goes through the same front door
    from medvl.evaluation.extraction import load_encoder

    with pytest.raises(ModelLoadError, match="auto_map"):
        load_encoder(hf_model=remote_code_dir)
    assert not marker.exists()


def test_cli_refuses_then_runs_with_the_flag_and_records_it(remote_code_dir: Path, tmp_path: Path) -> None:
    marker = Path(__import__("os").environ["MEDVL_REMOTE_CODE_MARKER"])
    manifest = write_manifest(tmp_path / "data")
    runner = CliRunner()
    base = ["evaluate", "--model", str(remote_code_dir), "--data", str(manifest), "--tasks", "retrieval",
            "--set", "progress=false"]
    refused = runner.invoke(build_app(), [*base, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "--trust-remote-code" in refused.output
    assert not marker.exists() and not (tmp_path / "refused" / "results.json").exists()
    allowed = runner.invoke(build_app(), [*base, "--out", str(tmp_path / "allowed"), "--trust-remote-code"])
    assert allowed.exit_code == 0, allowed.output
    assert marker.exists()
    prov = json.loads((tmp_path / "allowed" / "results.json").read_text())["provenance"]
    assert prov["trust_remote_code"] is True and prov["preprocessing"]["trust_remote_code"] is True


def test_every_from_pretrained_gets_an_explicit_false(family_dir: Callable[[str], Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers as tf

    calls: list[tuple[str, Any]] = []
    depth = [0]  # only calls made by medvl, not transformers' own nested ones
    for cls_name in ("AutoConfig", "AutoModel", "AutoTokenizer", "AutoImageProcessor", "AutoProcessor"):
        cls = getattr(tf, cls_name)
        original = cls.from_pretrained.__func__

        def wrapped(klass: Any, *args: Any, _orig: Any = original, _name: str = cls_name, **kwargs: Any) -> Any:
            if depth[0] == 0:
                calls.append((_name, kwargs.get("trust_remote_code", "unset")))
            depth[0] += 1
            try:
                return _orig(klass, *args, **kwargs)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapped))
    model = load_model(family_dir("clip"))
    assert calls and all(value is False for _, value in calls), calls
    assert model.identity["trust_remote_code"] is False
    manifest = write_manifest(tmp_path / "data")
    out = tmp_path / "eval"
    result = CliRunner().invoke(build_app(), ["evaluate", "--model", str(family_dir("clip")), "--data", str(manifest),
                                              "--tasks", "retrieval", "--out", str(out), "--set", "progress=false"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["provenance"]["trust_remote_code"] is False
