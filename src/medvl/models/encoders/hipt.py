"""Loading published HIPT / H-ViT weights into the slide encoder by an explicit key mapping.

Files are read without running pickled code: ``.safetensors`` with safetensors, ``.pt``/``.pth``/
``.bin`` with ``torch.load(weights_only=True)`` (a file that needs arbitrary unpickling is refused
with that error). A container dict is unwrapped (``teacher`` first, as HIPT loads its DINO
checkpoints, then ``model``, ``state_dict``, ``model_state_dict``) and the ``module.`` (DataParallel)
and ``backbone.`` (DINO) prefixes are stripped.

Key mapping (HIPT → medvl ``SlideEncoder``), ``{i}`` a block/layer index:

=================================================  =============================================
HIPT (mahmoodlab ``HIPT_LGP_FC``; clemsgrs          medvl
``LocalGlobalHIPT``; a bare ViT-4K checkpoint)
=================================================  =============================================
``<R>phi.0.{weight,bias}``                         ``region.embed.phi.0.*``
``<R>cls_token``, ``<R>pos_embed``                 ``region.embed.cls_token``, ``…pos_embed``
``<R>blocks.{i}.norm1.*`` / ``norm2.*``            ``region.blocks.{i}.norm1.*`` / ``norm2.*``
``<R>blocks.{i}.attn.qkv.{weight,bias}``           ``region.blocks.{i}.attn.in_proj_{weight,bias}``
``<R>blocks.{i}.attn.proj.*``                      ``region.blocks.{i}.attn.out_proj.*``
``<R>blocks.{i}.mlp.fc1.*`` / ``mlp.fc2.*``        ``region.blocks.{i}.mlp.0.*`` / ``mlp.3.*``
``<R>norm.*``                                      ``region.norm.*``
``global_phi.0.*``                                 ``phi.0.*``
``global_transformer.layers.{i}.*``                ``layers.{i}.*`` (same torch sub-keys)
``global_attn_pool.attention_{a,b}.0.*``,          ``pool.attention_{a,b}.0.*``, ``pool.attention_c.*``
``global_attn_pool.attention_c.*``
``global_rho.0.*``                                 ``rho.0.*``
=================================================  =============================================

``<R>`` is the region-level prefix: ``local_vit.`` (mahmoodlab), ``vit_4096.`` or ``vit_region.``
(clemsgrs), or nothing in a bare ViT-4K (DINO teacher) checkpoint. Ignored and reported:
``classifier.*`` (the task head; medvl's heads live in the model), a DINO ``head.*`` and the
ViT-4K's empty ``head``. A key in none of these forms is an error, and so is a level that is
only partly present. HIPT's fused ``qkv`` projection stores q, k, v stacked row-wise, which is
the layout of ``nn.MultiheadAttention.in_proj_weight``, so values are copied unchanged.
Files whose keys are already medvl's (a medvl-saved slide tower) load as they are.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medvl.utils.errors import UserInputError

__all__ = ["HIPTLoadReport", "HIPTWeightsError", "load_slide_weights", "map_hipt_keys", "read_state_dict"]

#: Region-level prefixes of the known HIPT implementations, tried in this order.
REGION_PREFIXES: tuple[str, ...] = ("local_vit.", "vit_4096.", "vit_region.", "")
#: Container keys unwrapped, in this order.
CONTAINER_KEYS: tuple[str, ...] = ("teacher", "model", "state_dict", "model_state_dict")
#: Keys ignored (and reported): task heads and DINO projection heads.
IGNORED = re.compile(r"^(classifier\.|head\.|global_classifier\.)")

_REGION_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^phi\.0\.(weight|bias)$"), r"region.embed.phi.0.\1"),
    (re.compile(r"^(cls_token|pos_embed)$"), r"region.embed.\1"),
    (re.compile(r"^blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)$"), r"region.blocks.\1.\2.\3"),
    (re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"), r"region.blocks.\1.attn.in_proj_\2"),
    (re.compile(r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$"), r"region.blocks.\1.attn.out_proj.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$"), r"region.blocks.\1.mlp.0.\2"),
    (re.compile(r"^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$"), r"region.blocks.\1.mlp.3.\2"),
    (re.compile(r"^norm\.(weight|bias)$"), r"region.norm.\1"),
)
_SLIDE_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^global_phi\.0\.(weight|bias)$"), r"phi.0.\1"),
    (re.compile(r"^global_transformer\.layers\.(\d+)\.(.+)$"), r"layers.\1.\2"),
    (re.compile(r"^global_attn_pool\.(attention_[ab])\.0\.(weight|bias)$"), r"pool.\1.0.\2"),
    (re.compile(r"^global_attn_pool\.attention_c\.(weight|bias)$"), r"pool.attention_c.\1"),
    (re.compile(r"^global_rho\.0\.(weight|bias)$"), r"rho.0.\1"),
)


class HIPTWeightsError(UserInputError, ValueError):
    """A weights file that cannot be read or mapped onto the slide encoder; names the file and keys."""


@dataclass
class HIPTLoadReport:
    """What :func:`load_slide_weights` did: levels filled, keys ignored."""

    path: str
    levels: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (see the module docstring), containers unwrapped, prefixes stripped."""
    file = Path(path)
    if not file.is_file():
        raise HIPTWeightsError(f"{file}: weights file not found")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(file))
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt files and refused pickles raise library-specific errors
        raise HIPTWeightsError(f"{file}: cannot read weights safely ({type(exc).__name__}: {exc})") from None
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise HIPTWeightsError(f"{file}: expected a state dict of tensors, got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # epoch counters, args, ... stored next to the weights
        name = str(key)
        for prefix in ("module.", "backbone."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = value
    if not out:
        raise HIPTWeightsError(f"{file}: no tensors found")
    return out


def _region_prefix(keys: list[str]) -> str:
    for prefix in REGION_PREFIXES[:-1]:
        if any(k.startswith(prefix + "blocks.") for k in keys):
            return prefix
    return ""


def map_hipt_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """``(mapped, ignored, unknown)``: medvl-named tensors, ignored HIPT keys, keys of no known form."""
    keys = list(state)
    prefix = _region_prefix(keys)
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        target = None
        for pattern, replacement in _SLIDE_RULES:
            if pattern.match(key):
                target = pattern.sub(replacement, key)
                break
        if target is None and key.startswith(prefix):
            local = key[len(prefix):]
            for pattern, replacement in _REGION_RULES:
                if pattern.match(local):
                    target = pattern.sub(replacement, local)
                    break
            if target is None and IGNORED.match(local):
                ignored.append(key)
                continue
        if target is None:
            if IGNORED.match(key):
                ignored.append(key)
            else:
                unknown.append(key)
            continue
        mapped[target] = value
    return mapped, sorted(ignored), sorted(unknown)


def _level(name: str) -> str:
    return "region" if name.startswith("region.") else "slide"


def load_slide_weights(encoder: nn.Module, path: str | os.PathLike[str]) -> HIPTLoadReport:
    """Copy a HIPT-format (or medvl-format) state dict into ``encoder`` (a ``SlideEncoder``).

    Every level present in the file must be complete and shape-compatible; levels absent from the
    file keep their initialisation (e.g. a ViT-4K DINO checkpoint fills only the region level).
    """
    state = read_state_dict(path)
    own = encoder.state_dict()
    ignored: list[str]
    unknown: list[str]
    if set(state) <= set(own):
        mapped, ignored, unknown = dict(state), [], []
    else:
        mapped, ignored, unknown = map_hipt_keys(state)
    if unknown:
        raise HIPTWeightsError(f"{path}: keys not in the documented HIPT mapping: {unknown[:12]}"
                               + (f" … and {len(unknown) - 12} more" if len(unknown) > 12 else ""))
    not_ours = sorted(set(mapped) - set(own))
    if not_ours:
        raise HIPTWeightsError(
            f"{path}: mapped keys the slide encoder does not have: {not_ours[:12]} (region depth, slide depth "
            "or the region level in the config differ from the checkpoint?)"
        )
    levels = sorted({_level(k) for k in mapped})
    if not levels:
        raise HIPTWeightsError(f"{path}: no slide-encoder weights found (only {sorted(state)[:8]})")
    for level in levels:
        expected = {k for k in own if _level(k) == level}
        missing = sorted(expected - set(mapped))
        if missing:
            raise HIPTWeightsError(f"{path}: the {level} level is incomplete; missing {missing[:12]}")
    for name, value in mapped.items():
        if tuple(value.shape) != tuple(own[name].shape):
            hint = ""
            if name.endswith("pos_embed"):
                hint = f" (set vision.region.pos_grid: {int((value.shape[1] - 1) ** 0.5)})"
            raise HIPTWeightsError(
                f"{path}: {name} has shape {tuple(value.shape)} in the file but {tuple(own[name].shape)} in the "
                f"model{hint}"
            )
    with torch.no_grad():
        tensors: dict[str, torch.Tensor] = {**dict(encoder.named_buffers()), **dict(encoder.named_parameters())}
        for name, value in mapped.items():
            target = tensors[name]
            target.copy_(value.to(target.dtype))
    return HIPTLoadReport(path=str(path), levels=levels, ignored=ignored)
