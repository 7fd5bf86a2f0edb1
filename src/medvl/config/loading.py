"""YAML loading, ``--set a.b.c=value`` overrides and error messages that name the key.

Usage::

    cfg = load_config("configs/train.yaml", TrainConfig, overrides=["optim.lr=3e-4"])
    save_resolved_config(cfg, run_dir)   # run_dir/config.yaml, the fully resolved config
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from medvl.config.base import RelativeToConfig
from medvl.utils.errors import UserInputError
from medvl.utils.io import atomic_write_text

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "did_you_mean",
    "load_config",
    "load_yaml",
    "resolve_config_paths",
    "save_resolved_config",
]

SchemaT = TypeVar("SchemaT", bound=BaseModel)


class ConfigError(UserInputError, ValueError):
    """A configuration problem; the message names the file and the key path."""


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` (an empty file is an empty mapping)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping, got {type(data).__name__}")
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key path")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``a.b.c=value`` applied (value parsed as YAML).

    Intermediate mappings are created when missing; the schema later rejects keys it does
    not know, naming them. Setting a key below a non-mapping value is an error.
    """
    result: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        path, value = _parse_override(item)
        node: dict[str, Any] = result
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"override {item!r}: {where} is a {type(child).__name__}, not a mapping")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models an annotation can hold (through Optional/Union, list, tuple and dict values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, set, frozenset, Sequence):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if origin in (dict, Mapping):
        args = typing.get_args(annotation)
        return _models_in(args[1]) if len(args) == 2 else []
    return []


def _has_tag(model: type[BaseModel], tag: str) -> bool:
    """True when a ``Literal`` field of ``model`` (a discriminator such as ``kind``) allows ``tag``."""
    for field in model.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal and tag in typing.get_args(field.annotation):
            return True
    return False


def _keys_at(schema: type[BaseModel], parents: Sequence[Any]) -> list[str]:
    """Every key the schema accepts at the location ``parents`` (union of the candidate models)."""
    models: list[type[BaseModel]] = [schema]
    for part in parents:
        if not isinstance(part, str):  # a list index or a union member tag: same models
            continue
        nxt: list[type[BaseModel]] = []
        for model in models:
            field = model.model_fields.get(part)
            if field is not None:
                nxt += _models_in(field.annotation)
            elif part == model.__name__ or _has_tag(model, part):  # pydantic's union member in the location
                nxt.append(model)
        if nxt:
            models = nxt
    keys: list[str] = []
    for model in models:
        for name, field in model.model_fields.items():
            keys.append(field.alias or name)
    return list(dict.fromkeys(keys))


def did_you_mean(key: str, candidates: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidates (difflib), or ``""`` when none is close."""
    close = difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def _format_validation_error(exc: ValidationError, source: str, schema: type[BaseModel] | None = None) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            hint = ""
            if schema is not None and err["loc"]:
                hint = did_you_mean(str(err["loc"][-1]), _keys_at(schema, err["loc"][:-1]))
            lines.append(f"  - {loc}: unknown key{hint}")
        elif err["type"] == "missing":
            lines.append(f"  - {loc}: required key is missing")
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            lines.append(f"  - {loc}: {err['msg']} (got {shown})")
    return "\n".join(lines)


def config_from_dict(data: Mapping[str, Any], schema: type[SchemaT], source: str = "<dict>") -> SchemaT:
    """Validate ``data`` against ``schema``; errors name ``source`` and every bad key path."""
    try:
        return schema.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, schema)) from None


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic model classes inside ``annotation`` (itself, or the members of ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]


def resolve_config_paths(data: Mapping[str, Any], schema: type[BaseModel], base_dir: str | os.PathLike[str]
                         ) -> dict[str, Any]:
    """A copy of ``data`` whose relative :class:`~medvl.config.base.RelativeToConfig` paths are joined to ``base_dir``.

    Walks ``schema`` and its nested model sections; absolute paths, ``~`` paths and values of
    other types are left as they are.
    """
    out = _deep_copy(data)
    base = Path(base_dir)
    for name, field in schema.model_fields.items():
        key = field.alias or name
        value = out.get(key)
        if value is None:
            continue
        if any(isinstance(m, RelativeToConfig) for m in field.metadata):
            if isinstance(value, (str, Path)) and str(value) and not str(value).startswith("~") \
                    and not Path(value).is_absolute():
                out[key] = str(base / value)
            continue
        if isinstance(value, Mapping):
            for model in _model_types(field.annotation):
                out[key] = resolve_config_paths(value, model, base)
                break
    return out


def load_config(
    path: str | os.PathLike[str] | None,
    schema: type[SchemaT],
    overrides: Sequence[str] = (),
) -> SchemaT:
    """Load ``path`` (or start from the schema defaults when ``None``), apply overrides, validate.

    Relative paths marked :class:`~medvl.config.base.RelativeToConfig` (``data.manifest``,
    ``data.root``) are resolved against the directory of ``path``; override values are not.
    """
    data = load_yaml(path) if path is not None else {}
    if path is not None:
        data = resolve_config_paths(data, schema, Path(path).resolve().parent)
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        source += " with --set " + " ".join(overrides)
    return config_from_dict(apply_overrides(data, overrides), schema, source)


def save_resolved_config(config: BaseModel, run_dir: str | os.PathLike[str], name: str = "config.yaml") -> Path:
    """Write the fully resolved config (every default filled in) to ``run_dir/name``."""
    target = Path(run_dir) / name
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    atomic_write_text(target, text)
    return target
