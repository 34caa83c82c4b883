"""Load YAML configs with ``_base_`` inheritance and dotted command-line overrides.

A config file names its parent with ``_base_: base.yaml`` (a path relative to itself, or a
list of them); dictionaries are merged in depth, everything else is replaced. The merged result
is checked against :data:`DEFAULTS`: unknown keys and wrong types are errors that say which
file, which key and what the closest valid key is.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml

from .defaults import DEFAULTS, FREE_FORM, NULLABLE


class ConfigError(ValueError):
    """A config file or override that cannot be used as written."""


class Config(dict):
    """A nested dict with attribute access (``cfg.solver.lr``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        return {
            k: v.to_dict() if isinstance(v, Config) else copy.deepcopy(v) for k, v in self.items()
        }


def _wrap(obj: Any) -> Any:
    if isinstance(obj, dict):
        return Config({k: _wrap(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_wrap(v) for v in obj]
    return obj


def deep_merge(base: dict, update: dict) -> dict:
    """Merge ``update`` into a copy of ``base``; nested dicts merge, other values replace."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def _load_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"_base_ cycle: {chain}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, _load_tree(path.parent / base, (*seen, path)))
    return deep_merge(merged, data)


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys here: {sorted(choices)}"


def _type_ok(default: Any, value: Any, dotted: str) -> bool:
    if dotted in NULLABLE:
        return value is None or isinstance(value, NULLABLE[dotted])
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        # a bin spec or a path may be written as a list/number in YAML; only str is accepted
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def _yaml_bool_to_word(value: Any, default: Any) -> Any:
    """YAML 1.1 reads an unquoted ``off``/``on`` as a bool; a string key means the word."""
    if isinstance(default, str) and isinstance(value, bool):
        return "on" if value else "off"
    return value


def validate(cfg: dict, schema: dict = DEFAULTS, prefix: str = "", source: str = "config") -> None:
    """Refuse unknown keys (with a suggestion) and values of the wrong type.

    String keys given an unquoted YAML ``off``/``on`` are turned back into the word in place.
    """
    for key in list(cfg):
        dotted = f"{prefix}{key}"
        if key in schema:
            cfg[key] = _yaml_bool_to_word(cfg[key], schema[key])
        value = cfg[key]
        if key not in schema:
            raise ConfigError(f"{source}: unknown key {dotted!r}{_suggest(key, list(schema))}")
        default = schema[key]
        if not _type_ok(default, value, dotted):
            kind = "number" if isinstance(default, float) else type(default).__name__
            raise ConfigError(
                f"{source}: key {dotted!r} expects a {kind} (default {default!r}), "
                f"got {value!r} ({type(value).__name__})"
            )
        if isinstance(default, dict) and dotted not in FREE_FORM:
            validate(value, default, dotted + ".", source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"solver.lr=0.01"`` -> (["solver", "lr"], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like KEY=VALUE, e.g. solver.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {err}") from None
    return key.split("."), value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    out = copy.deepcopy(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node, schema = out, DEFAULTS
        for i, part in enumerate(path[:-1]):
            dotted = ".".join(path[: i + 1])
            if not isinstance(schema, dict) or part not in schema:
                choices = list(schema) if isinstance(schema, dict) else []
                raise ConfigError(
                    f"override {text!r}: unknown key {dotted!r}{_suggest(part, choices)}"
                )
            schema = schema[part]
            node = node.setdefault(part, {})
        last = path[-1]
        parent = ".".join(path[:-1])
        if parent not in FREE_FORM and isinstance(schema, dict) and last not in schema:
            raise ConfigError(
                f"override {text!r}: unknown key {'.'.join(path)!r}{_suggest(last, list(schema))}"
            )
        # a float key given as an int on the command line (solver.lr=1) is still a float
        if (
            isinstance(schema, dict)
            and isinstance(schema.get(last), float)
            and isinstance(value, int)
        ):
            value = float(value)
        node[last] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the file (with its bases), then the overrides; validated."""
    cfg: dict = copy.deepcopy(DEFAULTS)
    if path is not None:
        tree = _load_tree(Path(path))
        validate(tree, source=str(path))
        cfg = deep_merge(cfg, tree)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
        validate(cfg, source="command-line override")
    return _wrap(cfg)


def save_config(cfg: dict, path: str | Path) -> None:
    """Write the resolved config; loading it back gives the same run."""
    data = cfg.to_dict() if isinstance(cfg, Config) else cfg
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
