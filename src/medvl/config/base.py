"""Base class for every medvl configuration schema.

All schemas are pydantic models that forbid unknown keys, so a typo in a YAML file is an
error naming the key rather than a silently ignored setting. Defaults live in the schema
classes (one per package, in this package) and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigPath", "RelativeToConfig", "StrictModel"]


@dataclass(frozen=True)
class RelativeToConfig:
    """Field marker: a relative path written in a config file is relative to that file's directory.

    :func:`medvl.config.loading.resolve_config_paths` applies it when a file is loaded; values given
    on the command line (``--set``) stay relative to the working directory, like any CLI path.
    """


#: A path that, written relatively in a YAML file, is resolved against the file's directory.
ConfigPath = Annotated[Path, RelativeToConfig()]


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
