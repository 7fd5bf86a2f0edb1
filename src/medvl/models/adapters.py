"""LoRA adapters on towers through the ``peft`` library (``model.<tower>.lora``).

:func:`apply_lora` injects LoRA layers (``peft.inject_adapter_in_model``) into the Linear (or
``nn.MultiheadAttention``) modules a tower names and freezes every other parameter of the tower:
only the adapters (and, with ``bias: lora_only``/``all``, the chosen biases) train. Heads,
projections and the other tower are unaffected. The adapters are ordinary submodules, so the
model's ``model.safetensors`` (checkpoints, ``save_pretrained``) holds them and a model rebuilt
from its config loads them; resume is exact like any other run.

Default targets, found from the tower's module *structure* (as peft's own defaults are):
attention query/value projections named ``query``/``value`` (ViT, DINOv2, Swin, BERT-family) or
``q_proj``/``v_proj`` (CLIP, SigLIP), a fused ``qkv`` Linear (timm ViTs, BiomedCLIP's vision tower),
else every ``nn.MultiheadAttention`` (open_clip and the built-in tiny towers). Towers without
attention (ResNet, ConvNeXt, CNNs) need ``target_modules``.

:func:`merge_lora` folds the adapters into the base weights (``W + (α/r)·B·A``) and removes the
LoRA modules, giving plain towers whose weights load without peft (``medvl models export
--merge-lora``); :func:`lora_state_dict` gives one tower's adapter in peft's own file layout
(``adapter_model.safetensors`` + ``adapter_config.json``), loadable with ``peft.PeftModel``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvl.config.loading import ConfigError
from medvl.config.model import LoraConfig

__all__ = ["apply_lora", "default_lora_targets", "lora_parameter_names", "lora_state_dict", "merge_lora",
           "save_lora_adapter"]

ADAPTER_NAME = "default"


def _peft() -> Any:
    from medvl.utils.compat import import_optional

    return import_optional("peft", "LoRA adapters (model.<tower>.lora)")


def _leaf_names(module: nn.Module, kind: type[nn.Module]) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, kind) and name]


def default_lora_targets(module: nn.Module) -> list[str]:
    """Attention projections of ``module`` to adapt (see the module docstring); ``[]`` when none."""
    linear = _leaf_names(module, nn.Linear)
    last = {name.rsplit(".", 1)[-1] for name in linear}
    if {"query", "value"} <= last:
        return ["query", "value"]
    if {"q_proj", "v_proj"} <= last:
        return ["q_proj", "v_proj"]
    if "qkv" in last:
        return ["qkv"]
    attention = _leaf_names(module, nn.MultiheadAttention)
    return sorted({name.rsplit(".", 1)[-1] for name in attention})


def _target(tower: nn.Module) -> nn.Module:
    """The module LoRA goes into: the backbone inside a tower wrapper when it exposes one."""
    core = getattr(tower, "core", None)
    return core if isinstance(core, nn.Module) else tower


def apply_lora(tower: nn.Module, cfg: LoraConfig, where: str = "tower") -> list[str]:
    """Inject LoRA into ``tower`` per ``cfg`` and freeze its base weights; returns the adapted module names.

    ``where`` names the config location in errors (``model.vision.lora``).
    """
    peft = _peft()
    target = _target(tower)
    modules = list(cfg.target_modules) if cfg.target_modules else default_lora_targets(target)
    if not modules:
        examples = ", ".join(_leaf_names(target, nn.Linear)[:8]) or "none"
        raise ConfigError(f"{where}.target_modules: this tower has no attention projections to adapt by default; "
                          f"name the Linear modules (their last name part), e.g. from: {examples}")
    for p in tower.parameters():
        p.requires_grad_(False)
    peft_cfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=modules,
                               bias=cfg.bias, use_rslora=cfg.rslora)
    try:
        peft.inject_adapter_in_model(peft_cfg, target, adapter_name=ADAPTER_NAME)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"{where}.target_modules={modules}: {exc}") from exc
    adapted = [name for name, m in target.named_modules() if hasattr(m, "lora_A") and name]
    for name, p in tower.named_parameters():
        if "lora_" in name or (cfg.bias == "all" and name.endswith("bias")) or (cfg.bias == "lora_only" and name.endswith("base_layer.bias")):
            p.requires_grad_(True)
    tower.lora_modules = adapted  # type: ignore[assignment]
    return adapted


def lora_parameter_names(module: nn.Module) -> list[str]:
    """Names of the LoRA parameters in ``module``."""
    return [name for name, _ in module.named_parameters() if "lora_" in name]


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA layer in ``module`` into its base layer and put the base layer back; returns the count."""
    from peft.tuners.lora import LoraLayer

    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer) and name]
    for name, layer in layers:
        layer.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    for p in module.parameters():
        p.requires_grad_(True)
    return len(layers)


def lora_state_dict(tower: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of one tower in peft's layout (``base_model.model.<module>.lora_A.weight``)."""
    peft = _peft()
    state = peft.get_peft_model_state_dict(_target(tower), adapter_name=ADAPTER_NAME)
    return {f"base_model.model.{k}": v.detach().contiguous().cpu() for k, v in state.items()}


def save_lora_adapter(tower: nn.Module, cfg: LoraConfig, directory: str | os.PathLike[str],
                      base_model: str | None = None) -> Path:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's format) for one tower."""
    import safetensors.torch as st

    from medvl.utils.io import atomic_write_text

    peft = _peft()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    st.save_file(lora_state_dict(tower), str(out / "adapter_model.safetensors"))
    modules = list(getattr(tower, "lora_modules", []))
    targets = list(cfg.target_modules) if cfg.target_modules else sorted({m.rsplit(".", 1)[-1] for m in modules})
    peft_cfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                               bias=cfg.bias, use_rslora=cfg.rslora, base_model_name_or_path=base_model)
    data = peft_cfg.to_dict()
    data = {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()}
    atomic_write_text(out / "adapter_config.json", json.dumps(data, indent=2, default=str) + "\n")
    return out
