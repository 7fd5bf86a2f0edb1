"""Layer groups built from parameter names, for towers whose library groups parameters (timm's
``group_matcher``) or keeps some parameters directly on a container module (open_clip's
``class_embedding``/``positional_embedding``).

A :class:`ParamGroup` holds the modules and bare parameters of one group *without* being
registered in the tower (it lives in a plain list), so the tower's ``state_dict`` is unchanged;
:func:`medvl.models.freezing.apply_freezing` only needs ``group.parameters()`` and
``group.modules()`` (to keep frozen BatchNorm layers in eval mode).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

__all__ = ["ParamGroup", "groups_from_names"]


class ParamGroup(nn.Module):
    """Modules plus bare parameters forming one layer group (not registered in the tower)."""

    def __init__(self, modules: Iterable[nn.Module] = (), params: Iterable[nn.Parameter] = ()) -> None:
        super().__init__()
        self.members = nn.ModuleList([m for m in modules if isinstance(m, nn.Module)])
        self.bare = nn.ParameterList([p for p in params if isinstance(p, nn.Parameter)])


def groups_from_names(root: nn.Module, groups: Iterable[Iterable[str]]) -> list[nn.Module]:
    """One :class:`ParamGroup` per list of parameter names (relative to ``root``), in order.

    Each parameter's owning module joins the group (so BatchNorm layers are found); parameters
    owned by ``root`` itself join as bare parameters.
    """
    out: list[nn.Module] = []
    for names in groups:
        modules: dict[str, nn.Module] = {}
        bare: list[nn.Parameter] = []
        for name in names:
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            if owner:
                modules.setdefault(owner, root.get_submodule(owner))
            else:
                bare.append(root.get_parameter(name))
        out.append(ParamGroup(modules.values(), bare))
    return out
