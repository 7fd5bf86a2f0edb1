"""A trained run's model as a standalone directory, optionally with LoRA merged (``medvl models export``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from medvl.config.loading import ConfigError
from medvl.models.adapters import merge_lora as merge
from medvl.models.adapters import save_lora_adapter
from medvl.models.loading.medvl import load_trained_model

__all__ = ["export_model"]


def export_model(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 which: Literal["best", "last"] = "best", merge_lora: bool = False, adapters: bool = False) -> Path:
    """Write a run's trained model (``best`` or ``last``) as a standalone model directory.

    ``merge_lora``: LoRA adapters are folded into the towers' weights and dropped from the config,
    so the directory loads as plain towers, without peft. ``adapters``: each adapted tower's LoRA
    weights are also written in peft's format under ``<out>/adapters/<tower>/`` (``adapter_model.safetensors``
    + ``adapter_config.json``, loadable with ``peft.PeftModel.from_pretrained`` on the base model).
    """
    model = load_trained_model(run_dir, which)
    target = Path(out)
    adapted = [(name, getattr(model, name), getattr(model.config, name)) for name in ("vision", "text")
               if getattr(model.config, name) is not None and getattr(model.config, name).lora is not None]
    if (merge_lora or adapters) and not adapted:
        raise ConfigError(f"{run_dir}: the model has no LoRA adapters (model.<tower>.lora); export it without "
                          "--merge-lora/--adapters")
    if adapters:
        for name, tower, tower_cfg in adapted:
            save_lora_adapter(tower, tower_cfg.lora, target / "adapters" / name,
                              base_model=getattr(tower_cfg, "name_or_path", None))
    if merge_lora:
        for _, tower, tower_cfg in adapted:
            merge(tower)
            tower_cfg.lora = None
    model.save_pretrained(target)
    return target
