"""Heads on top of the towers: projections into the joint space, task classifiers, class
prototypes, and the learnable logit scale / bias the model owns (so the optimizer sees them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medvl.config.model import ClassifierHeadConfig, LogitBiasConfig, LogitScaleConfig, ProjectionConfig

__all__ = ["ClassifierHead", "LogitBias", "LogitScale", "PrototypeHead", "build_projection"]


def build_projection(cfg: ProjectionConfig, in_dim: int, out_dim: int) -> nn.Module:
    """``identity`` (returns its input; joint dim = ``in_dim``), ``linear`` or ``mlp``."""
    if cfg.kind == "identity":
        return nn.Identity()
    if cfg.kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=cfg.bias)
    hidden = cfg.hidden_dim or in_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=cfg.bias),
        nn.GELU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(hidden, out_dim, bias=cfg.bias),
    )


def projection_out_dim(cfg: ProjectionConfig, in_dim: int, out_dim: int) -> int:
    """The output width of :func:`build_projection`."""
    return in_dim if cfg.kind == "identity" else out_dim


class ClassifierHead(nn.Module):
    """Task head: (B, in_dim) → (B, C) logits (multilabel/multiclass) or (B,) (ordinal/regression)."""

    def __init__(self, cfg: ClassifierHeadConfig, in_dim: int) -> None:
        super().__init__()
        self.kind = cfg.kind
        out = cfg.num_classes if cfg.kind in ("multilabel", "multiclass") else 1
        assert out is not None  # guaranteed by the config validator
        layers: list[nn.Module] = []
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        if cfg.hidden_dim is not None:
            layers += [nn.Linear(in_dim, cfg.hidden_dim), nn.GELU()]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            in_dim = cfg.hidden_dim
        layers.append(nn.Linear(in_dim, out, bias=cfg.bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(-1) if self.kind in ("ordinal", "regression") else out


class LogitScale(nn.Module):
    """A log logit scale ``log_scale``; ``forward()`` returns ``exp(log_scale)`` (a 0-d tensor).

    ``clamp_()`` clamps the *parameter* in place to ``[ln min_scale, ln max_scale]``; the trainer
    calls it after every optimizer step (open_clip does the same; DLILP clamps inside the loss).
    """

    def __init__(self, cfg: LogitScaleConfig) -> None:
        super().__init__()
        init = torch.tensor(cfg.init_log_scale, dtype=torch.float32)
        self.log_scale = nn.Parameter(init, requires_grad=cfg.learnable)
        self.min_log = math.log(cfg.min_scale) if cfg.min_scale is not None else None
        self.max_log = math.log(cfg.max_scale) if cfg.max_scale is not None else None
        self.clamp_()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(min=self.min_log, max=self.max_log)

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()

    def extra_repr(self) -> str:
        return f"scale={float(self.log_scale.exp()):.4g}, learnable={self.log_scale.requires_grad}"


class LogitBias(nn.Module):
    """A scalar logit bias (SigLIP). ``forward()`` returns it as a 0-d tensor."""

    def __init__(self, cfg: LogitBiasConfig) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(float(cfg.init)), requires_grad=cfg.learnable)

    def forward(self) -> torch.Tensor:
        return self.bias


class PrototypeHead(nn.Module):
    """``logits = s · normalize(x) @ normalize(P).T``: cosine similarity to class prototypes
    ``P`` (C, dim) times the head's own clamped scale ``s``. Returns (B, C)."""

    def __init__(self, num_classes: int, dim: int, scale: LogitScaleConfig) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_normal_(self.prototypes)  # as DLILP (B.3)
        self.logit_scale = LogitScale(scale)

    def clamp_(self) -> None:
        self.logit_scale.clamp_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_scale() * F.normalize(x, dim=-1) @ F.normalize(self.prototypes, dim=-1).T
