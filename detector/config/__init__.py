"""Configuration: the schema of valid keys and values, and the YAML loader that enforces it."""

from .defaults import CHOICES, DEFAULTS, RANGES
from .loader import Config, ConfigError, check_values, load_config, save_config

__all__ = [
    "CHOICES",
    "DEFAULTS",
    "RANGES",
    "Config",
    "ConfigError",
    "check_values",
    "load_config",
    "save_config",
]
