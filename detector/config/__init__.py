"""Configuration: the schema of valid keys and the YAML loader."""

from .defaults import DEFAULTS
from .loader import Config, ConfigError, load_config, save_config

__all__ = ["DEFAULTS", "Config", "ConfigError", "load_config", "save_config"]
