"""Configuration: pydantic schemas (one module per package), YAML loading and overrides."""

from medvl.config.base import StrictModel
from medvl.config.loading import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    load_config,
    load_yaml,
    save_resolved_config,
)

__all__ = [
    "ConfigError",
    "StrictModel",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "load_yaml",
    "save_resolved_config",
]
