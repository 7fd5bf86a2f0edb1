"""LoRA adapters on towers through the ``peft`` library (``model.<tower>.lora``).

:func:`apply_lora` injects LoRA layers (``peft.inject_adapter_in_model``) into the modules a tower
names, inside the family's own model (the tower's ``core``: a Hugging Face backbone, timm's model,
open_clip's ``model.visual``/``model.text``), and freezes every other parameter of the tower: only
the adapters (and, with ``bias: lora_only``/``all``, the chosen biases) train. Heads, projections
and the other tower are unaffected. The adapters are ordinary submodules, so the model's
``model.safetensors`` (checkpoints, ``save_pretrained``) holds them and a model rebuilt from its
config loads them; resume is exact like any other run.

Default targets, found from the tower's module *structure* (as peft's own defaults are):
attention query/value projections named ``query``/``value`` (ViT, DINOv2, Swin, BERT-family) or
``q_proj``/``v_proj`` (CLIP, SigLIP), a fused ``qkv`` Linear (timm ViTs, BiomedCLIP's vision trunk),
else every ``nn.MultiheadAttention`` (open_clip's ViT/text transformers, the built-in tiny towers).
Towers without attention (ResNet, ConvNeXt, CNNs) need ``target_modules``. An
``nn.MultiheadAttention`` is adapted on its fused query/key/value weight ``in_proj_weight`` with
peft's parameter LoRA (``target_parameters``, see :func:`resolve_lora_targets`), the same update a
timm ``qkv`` Linear gets; its ``out_proj`` cannot be adapted.

:func:`merge_lora` folds the adapters into the base weights (``W + (α/r)·B·A``) and removes the
LoRA modules, giving plain towers whose weights load without peft (``medvl models export
--merge-lora``); :func:`lora_state_dict` gives one tower's adapter in peft's own file layout
(``adapter_model.safetensors`` + ``adapter_config.json``), loadable with ``peft.PeftModel`` onto the
tower's ``core`` model.
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
           "resolve_lora_targets", "save_lora_adapter"]

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
    """The module LoRA goes into: the family's own model inside a tower wrapper (``core``) when it exposes one.

    Adapter files (:func:`lora_state_dict`) name modules relative to it, so peft loads them onto that model.
    """
    core = getattr(tower, "core", None)
    return core if isinstance(core, nn.Module) else tower


def _matches(name: str, target: str) -> bool:
    """peft's rule for a string in ``target_modules``: the full name or its last dotted parts."""
    return name == target or name.endswith(f".{target}")


def resolve_lora_targets(module: nn.Module, names: list[str], where: str = "tower") -> tuple[list[str], list[str]]:
    """peft's ``(target_modules, target_parameters)`` for the module names a config lists.

    An ``nn.MultiheadAttention`` named there is adapted on its fused query/key/value weight
    (``<name>.in_proj_weight``, peft's parameter LoRA: the low-rank update is added through a
    parametrization during the forward pass, so the frozen weight is never rewritten). peft's own
    ``MultiheadAttention`` layer is not used: it merges the update into the frozen weights before
    every forward and subtracts it after, which leaves them changed by rounding at every step, and it
    swaps their ``Parameter`` objects. Naming the ``out_proj`` of an ``nn.MultiheadAttention`` is an
    error: PyTorch reads its weight directly and never calls its forward, so an adapter there would
    have no effect.
    """
    modules: list[str] = []
    parameters: list[str] = []
    all_named = list(module.named_modules())
    attention_out = {f"{name}.out_proj" for name, m in all_named if isinstance(m, nn.MultiheadAttention)}
    for target in names:
        found = [(name, m) for name, m in all_named if name and _matches(name, target)]
        if not found:
            examples = ", ".join(_leaf_names(module, nn.Linear)[:8]) or "none"
            raise ConfigError(f"{where}.target_modules={names}: {target!r} names no module of this tower; "
                              f"Linear modules are e.g. {examples}")
        if any(name in attention_out for name, _ in found):
            raise ConfigError(f"{where}.target_modules: {target!r} is the out_proj of an nn.MultiheadAttention, "
                              "whose forward PyTorch never calls (an adapter there has no effect); name the "
                              "attention module itself to adapt its fused query/key/value projection")
        attention = [(name, m) for name, m in found if isinstance(m, nn.MultiheadAttention)]
        if attention and len(attention) != len(found):
            raise ConfigError(f"{where}.target_modules: {target!r} names both nn.MultiheadAttention and other "
                              "modules; use a longer (dotted) name that picks one kind")
        for name, m in attention:
            if getattr(m, "in_proj_weight", None) is None:
                raise ConfigError(f"{where}.target_modules: {name} is an nn.MultiheadAttention with separate "
                                  "query/key/value weights (kdim/vdim), which peft cannot adapt")
        if attention:
            parameters.append(f"{target}.in_proj_weight")
        else:
            modules.append(target)
    return modules, parameters


def apply_lora(tower: nn.Module, cfg: LoraConfig, where: str = "tower") -> list[str]:
    """Inject LoRA into ``tower`` per ``cfg`` and freeze its base weights; returns the adapted module names.

    ``where`` names the config location in errors (``model.vision.lora``).
    """
    peft = _peft()
    target = _target(tower)
    names = list(cfg.target_modules) if cfg.target_modules else default_lora_targets(target)
    if not names:
        examples = ", ".join(_leaf_names(target, nn.Linear)[:8]) or "none"
        raise ConfigError(f"{where}.target_modules: this tower has no attention projections to adapt by default; "
                          f"name the Linear modules (their last name part), e.g. from: {examples}")
    modules, parameters = resolve_lora_targets(target, names, where)
    if parameters and cfg.dropout:
        raise ConfigError(f"{where}.dropout={cfg.dropout}: the nn.MultiheadAttention projections "
                          f"({', '.join(parameters)}) are adapted on their weight, where LoRA dropout cannot act; "
                          "set dropout: 0")
    if parameters and cfg.bias == "lora_only":
        raise ConfigError(f"{where}.bias=lora_only: peft's weight adapters of nn.MultiheadAttention "
                          f"({', '.join(parameters)}) have no bias of their own to train; use bias: none or all")
    for p in tower.parameters():
        p.requires_grad_(False)
    peft_cfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=modules,
                               target_parameters=parameters or None, bias=cfg.bias, use_rslora=cfg.rslora)
    try:
        peft.inject_adapter_in_model(peft_cfg, target, adapter_name=ADAPTER_NAME)
    except ValueError as exc:  # peft: "Target modules {...} not found", unsupported layer types
        raise ConfigError(f"{where}.target_modules={names}: {exc}") from exc
    adapted = [name for name, m in target.named_modules() if hasattr(m, "lora_A") and name]
    for name, p in tower.named_parameters():
        if "lora_" in name or (cfg.bias == "all" and name.endswith("bias")) or (cfg.bias == "lora_only" and name.endswith("base_layer.bias")):
            p.requires_grad_(True)
    tower.lora_modules = adapted  # type: ignore[assignment]
    tower.lora_targets = {"target_modules": modules, "target_parameters": parameters}  # type: ignore[assignment]
    return adapted


def lora_parameter_names(module: nn.Module) -> list[str]:
    """Names of the LoRA parameters in ``module``."""
    return [name for name, _ in module.named_parameters() if "lora_" in name]


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA layer in ``module`` into its base layer and put the base layer back; returns the count.

    Innermost layers first (peft nests wrappers, e.g. several parameter adapters on one module), each
    through peft's own ``unload_and_optionally_merge_module`` where the layer type has one, so the
    result has the original module types and state-dict keys.
    """
    from peft.tuners.lora import LoraLayer

    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, LoraLayer) and name]
    for name, layer in sorted(layers, key=lambda item: -item[0].count(".")):
        if hasattr(layer, "unload_and_optionally_merge_module"):
            base = layer.unload_and_optionally_merge_module(merge=True, safe_merge=True, adapter_names=None)
        else:
            layer.merge(safe_merge=True)
            base = layer.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, base)
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
    targets = getattr(tower, "lora_targets", None)
    if targets is None:
        raise ValueError(f"{type(tower).__name__} has no LoRA adapters (apply_lora was not called on it)")
    peft_cfg = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                               target_modules=list(targets["target_modules"]),
                               target_parameters=list(targets["target_parameters"]) or None,
                               bias=cfg.bias, use_rslora=cfg.rslora, base_model_name_or_path=base_model)
    data = peft_cfg.to_dict()
    data = {k: (sorted(v) if isinstance(v, set) else v) for k, v in data.items()}
    atomic_write_text(out / "adapter_config.json", json.dumps(data, indent=2, default=str) + "\n")
    return out
