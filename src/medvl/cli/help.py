"""Readable ``--help`` for every medvl command.

typer renders parameter types as Python annotations (``<bool>`` after every flag,
``<list[str]>`` for repeatable options) and required arguments as ``{config}`` in the usage
line. :func:`use_readable_help` gives every command of an app the conventional form instead:

* flags show no type (``--overwrite``), value options a metavar — ``PATH``, ``FILE``, ``DIR``,
  ``TEXT``, ``INTEGER``, ``FLOAT``, the choices ``a|b`` — and ``--set`` shows ``KEY=VALUE``;
* arguments are upper case: ``medvl train [OPTIONS] CONFIG``, optional ones ``[CONFIG]``,
  repeatable ones ``EMBEDDINGS...``.

It works by giving every command and group a class whose ``get_params`` switches its
parameters to the readable subclasses below; nothing of typer is patched globally.
"""

from __future__ import annotations

import functools
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder

__all__ = ["metavar_of", "use_readable_help"]

_TYPE_NAMES = {int: "INTEGER", float: "FLOAT", str: "TEXT", bool: "BOOLEAN"}


def metavar_of(param: Any) -> str:
    """The conventional metavar of a typer parameter (``PATH``, ``TEXT``, ``KEY=VALUE``, ``a|b``, …)."""
    if "--set" in getattr(param, "opts", ()):
        return "KEY=VALUE"
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    if desc.is_path:
        return {"file": "FILE", "dir": "DIR"}.get(desc.path_type, "PATH")
    annotation = desc.annotation
    if get_origin(annotation) in (list, tuple):
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        annotation = args[0] if args else str
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", "VALUE").upper())


class _ReadableOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar
        return metavar_of(self) + ("..." if self.nargs != 1 else "")

    def display_type(self, ctx: Any) -> str:
        return metavar_of(self)


class _ReadableArgument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else str(self.name).upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return metavar_of(self)

    def display_type(self, ctx: Any) -> str:
        return metavar_of(self)

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _readable_param(param: Any) -> Any:
    if isinstance(param, TyperOption) and not isinstance(param, _ReadableOption):
        param.__class__ = _ReadableOption  # same attributes, display methods only
    elif isinstance(param, TyperArgument) and not isinstance(param, _ReadableArgument):
        param.__class__ = _ReadableArgument
    return param


class _ReadableHelp:
    """Mixin for typer command/group classes: parameters are displayed the conventional way."""

    def get_params(self, ctx: Any) -> list[Any]:
        return [_readable_param(p) for p in super().get_params(ctx)]  # type: ignore[misc]


@functools.cache
def _readable_class(base: type) -> type:
    if issubclass(base, _ReadableHelp):
        return base
    return type(f"Readable{base.__name__}", (_ReadableHelp, base), {})


def _explicit(value: Any) -> Any:
    return None if value is None or isinstance(value, DefaultPlaceholder) else value


def use_readable_help(app: typer.Typer) -> typer.Typer:
    """Give every command and group of ``app`` (recursively) the readable help; returns ``app``."""
    app.info.cls = _readable_class(_explicit(app.info.cls) or TyperGroup)
    for command in app.registered_commands:
        command.cls = _readable_class(command.cls or TyperCommand)
    for group in app.registered_groups:
        sub = group.typer_instance
        assert sub is not None
        use_readable_help(sub)
        base = _explicit(group.cls) or _explicit(sub.info.cls) or TyperGroup
        group.cls = _readable_class(base)
    return app
