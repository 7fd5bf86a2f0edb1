"""Base class for every medvl configuration schema.

All schemas are pydantic models that forbid unknown keys, so a typo in a YAML file is an
error naming the key rather than a silently ignored setting. Defaults live in the schema
classes (one per package, in this package) and nowhere else.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown keys and validates assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
