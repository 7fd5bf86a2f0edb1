"""AdamW with decay / no-decay parameter groups, and learning-rate schedules sized in optimizer steps."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medvl.config.training import OptimizerConfig, ScheduleConfig

__all__ = [
    "LRSchedule",
    "ParamGroupSummary",
    "batches_per_epoch",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "optimizer_steps_per_epoch",
]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._NormBase,
)


@dataclass
class ParamGroupSummary:
    """Which trainable parameter landed in which group (for logs and tests)."""

    names: dict[str, list[str]] = field(default_factory=dict)
    """Group name → parameter names."""
    frozen: list[str] = field(default_factory=list)
    """Parameters with ``requires_grad=False`` (not in the optimizer)."""

    def group_of(self, param_name: str) -> str:
        """The group holding ``param_name``; ``KeyError`` when it is frozen or unknown."""
        for group, names in self.names.items():
            if param_name in names:
                return group
        raise KeyError(f"parameter {param_name!r} is not in any optimizer group")


def _lr_multiplier(name: str, multipliers: dict[str, float]) -> tuple[str, float]:
    best = ""
    for prefix in multipliers:
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return (best, multipliers[best]) if best else ("", 1.0)


def build_param_groups(module: nn.Module, cfg: OptimizerConfig) -> tuple[list[dict[str, Any]], ParamGroupSummary]:
    """Split ``module``'s trainable parameters into AdamW groups.

    No weight decay for: tensors with fewer than 2 dimensions (biases, norm scales, the logit
    scale), names ending in ``bias``, every parameter of a normalisation layer, and names
    containing an entry of ``cfg.no_decay_names``, and whatever a submodule's
    ``no_weight_decay_names()`` declares (names relative to that submodule). ``cfg.lr_multipliers`` scales the learning
    rate by longest matching name prefix. Parameters shared between modules appear once.
    """
    norm_params: set[int] = set()
    declared: set[int] = set()
    for sub in module.modules():
        if isinstance(sub, _NORM_TYPES):
            norm_params.update(id(p) for p in sub.parameters(recurse=False))
        names_fn = getattr(sub, "no_weight_decay_names", None)
        if callable(names_fn):  # a module may declare more (e.g. position embeddings of DualEncoder)
            own = dict(sub.named_parameters())
            declared.update(id(own[n]) for n in names_fn() if n in own)
    groups: dict[str, dict[str, Any]] = {}
    summary = ParamGroupSummary()
    for name, param in module.named_parameters():
        if not param.requires_grad:
            summary.frozen.append(name)
            continue
        no_decay = (
            param.ndim < 2
            or name.endswith("bias")
            or id(param) in norm_params
            or id(param) in declared
            or any(token in name for token in cfg.no_decay_names)
        )
        prefix, mult = _lr_multiplier(name, cfg.lr_multipliers)
        key = ("no_decay" if no_decay else "decay") + (f"@{prefix}" if prefix else "")
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": cfg.lr * mult,
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                "group_name": key,
            }
            summary.names[key] = []
        groups[key]["params"].append(param)
        summary.names[key].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters (everything is frozen)")
    return [groups[k] for k in sorted(groups)], summary


def build_optimizer(module: nn.Module, cfg: OptimizerConfig) -> tuple[torch.optim.Optimizer, ParamGroupSummary]:
    """AdamW over :func:`build_param_groups` of ``module``."""
    groups, summary = build_param_groups(module, cfg)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return optimizer, summary


def batches_per_epoch(samples_per_replica: int, batch_size: int, drop_last: bool) -> int:
    """Micro-batches one replica draws per epoch."""
    return samples_per_replica // batch_size if drop_last else math.ceil(samples_per_replica / batch_size)


def optimizer_steps_per_epoch(n_batches: int, accumulate: int) -> int:
    """Optimizer steps per epoch: one per full group of ``accumulate`` micro-batches plus the partial last group."""
    return math.ceil(n_batches / accumulate)


class LRSchedule:
    """Learning-rate factor as a function of the number of optimizer steps already taken.

    A plain object with numeric attributes, so ``LambdaLR.state_dict()`` stays JSON-able.
    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int, steps_per_epoch: int,
                 min_lr_ratio: float = 0.0, step_epochs: int = 1, gamma: float = 0.1) -> None:
        if kind not in ("constant", "step", "cosine"):
            raise ValueError(f"unknown schedule kind {kind!r}")
        self.kind = kind
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = min(int(warmup_steps), self.total_steps)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.min_lr_ratio = float(min_lr_ratio)
        self.step_epochs = int(step_epochs)
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return self.gamma ** (step // (self.step_epochs * self.steps_per_epoch))
        span = self.total_steps - 1 - self.warmup_steps
        progress = 1.0 if span <= 0 else min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, steps_per_epoch: int, epochs: int
) -> tuple[torch.optim.lr_scheduler.LambdaLR, LRSchedule]:
    """A ``LambdaLR`` stepped once per optimizer step over ``steps_per_epoch × epochs`` steps.

    The cosine schedule reaches ``min_lr_ratio · lr`` at the last optimizer step of the run.
    """
    warmup = cfg.warmup_steps
    if cfg.warmup_epochs is not None:
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
    schedule = LRSchedule(cfg.kind, steps_per_epoch * epochs, warmup, steps_per_epoch,
                          cfg.min_lr_ratio, cfg.step_epochs, cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), schedule
