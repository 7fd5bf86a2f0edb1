"""Freezing a tower: none, full, or the first layer groups from the input side.

Semantics (``FreezeConfig``):

- A tower's ``layer_groups()`` lists modules from input to output, e.g. TinyViT
  ``[patch embedding, block 0, …, block L-1, final norm]``, HF ViT
  ``[embeddings, layer 0, …, layer L-1, final norm + pooler]``, BERT
  ``[embeddings, layer 0, …, layer L-1, pooler]``, ResNet ``[stem, stage 1, …, stage S]``.
- ``partial`` with ``groups: N`` freezes ``layer_groups()[:N]``; with ``fraction: f`` it freezes the
  first ``ceil(f · n_groups)`` groups. (open_clip counts *unlocked* groups from the head instead —
  issues #854/#866 show how confusing an undocumented count is; here N counts *frozen* groups
  from the input.) ``groups: n_groups`` freezes every group but not parameters outside groups.
  ``indices: [1, 2, 3, 4]`` freezes exactly those groups (negative indices count from the end);
  e.g. for an HF ViT that freezes blocks 0–3 and leaves the embeddings trainable, which is what the
  Balancing-Act code did (A.4).
- ``full`` freezes every parameter of the tower (groups or not) and keeps the tower in eval mode.
- ``train_norms`` keeps normalisation layers (LayerNorm, BatchNorm, GroupNorm, InstanceNorm,
  RMSNorm and subclasses) inside frozen groups trainable.
- ``freeze_bn_stats`` keeps BatchNorm layers of frozen groups in eval mode, so their running
  statistics stay fixed (re-applied by :meth:`FreezeState.apply_modes` after every ``.train()``).

Projection and task heads are not part of a tower and are not affected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import nn

from medvl.config.model import FreezeConfig

__all__ = [
    "NORM_TYPES",
    "FreezeState",
    "apply_freezing",
    "count_parameters",
    "frozen_group_indices",
    "num_frozen_groups",
]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def frozen_group_indices(n_groups: int, cfg: FreezeConfig) -> list[int]:
    """Indices (sorted, in ``range(n_groups)``) of the layer groups ``cfg`` freezes."""
    if cfg.mode == "partial" and cfg.indices is not None:
        out = set()
        for i in cfg.indices:
            if not -n_groups <= i < n_groups:
                raise ValueError(f"freeze.indices has {i} but the tower has only {n_groups} layer groups")
            out.add(i % n_groups)
        return sorted(out)
    return list(range(num_frozen_groups(n_groups, cfg)))


def num_frozen_groups(n_groups: int, cfg: FreezeConfig) -> int:
    """How many leading layer groups ``cfg`` freezes out of ``n_groups`` (modes none/full/partial by
    ``groups`` or ``fraction``; use :func:`frozen_group_indices` for ``indices``)."""
    if cfg.mode == "none":
        return 0
    if cfg.mode == "full":
        return n_groups
    if cfg.indices is not None:
        return len(frozen_group_indices(n_groups, cfg))
    if cfg.groups is not None:
        if cfg.groups > n_groups:
            raise ValueError(f"freeze.groups={cfg.groups} but the tower has only {n_groups} layer groups")
        return cfg.groups
    assert cfg.fraction is not None
    return math.ceil(cfg.fraction * n_groups - 1e-9)


@dataclass
class FreezeState:
    """What :func:`apply_freezing` did to one tower."""

    mode: str
    n_groups: int
    n_frozen_groups: int
    eval_modules: list[nn.Module] = field(default_factory=list)

    @property
    def fully_frozen(self) -> bool:
        return self.mode == "full"

    def apply_modes(self) -> None:
        """Put the modules that must stay in eval mode (full tower / frozen BatchNorm) back in eval."""
        for module in self.eval_modules:
            module.eval()


def apply_freezing(tower: nn.Module, cfg: FreezeConfig, groups: list[nn.Module]) -> FreezeState:
    """Set ``requires_grad`` on ``tower`` according to ``cfg``; ``groups`` = ``tower.layer_groups()``."""
    n = len(groups)
    chosen = frozen_group_indices(n, cfg)
    state = FreezeState(mode=cfg.mode, n_groups=n, n_frozen_groups=len(chosen))
    if cfg.mode == "none":
        return state
    if cfg.mode == "full":
        if cfg.train_norms:
            raise ValueError("freeze.train_norms applies to mode=partial; mode=full freezes every parameter")
        for p in tower.parameters():
            p.requires_grad_(False)
        state.eval_modules.append(tower)
        tower.eval()
        return state
    frozen = [groups[i] for i in chosen]
    for group in frozen:
        for p in group.parameters():
            p.requires_grad_(False)
    for group in frozen:
        for module in group.modules():
            if isinstance(module, NORM_TYPES):
                if cfg.train_norms:
                    for p in module.parameters(recurse=False):
                        p.requires_grad_(True)
                if cfg.freeze_bn_stats and isinstance(module, nn.modules.batchnorm._BatchNorm):
                    state.eval_modules.append(module)
    state.apply_modes()
    return state
