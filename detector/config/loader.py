"""Load YAML configs with ``_base_`` inheritance and dotted command-line overrides.

A config file names its parent with ``_base_: base.yaml`` (a path relative to itself, or a
list of them); dictionaries are merged in depth, everything else is replaced. The merged result
is checked in two passes against :mod:`detector.config.defaults`: :func:`validate` refuses
unknown keys and wrong types, :func:`check_values` refuses values the schema does not allow
(``CHOICES``, ``RANGES``, ``ITEMS`` and the rules that tie keys together). Both run inside
:func:`load_config`, so a bad value fails before any data is read. Every refusal names the key,
the file that set it (or "command-line override"), the value and what is allowed.

Numbers: YAML 1.1 reads ``1e-3`` (no dot) as a string; for a number key the loader takes it as
the number the user meant. A float key always holds a float; an int key takes ``1e6`` (or
``1000000.0``) when the value is integral.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import yaml

from detector.utils.bins import PRESETS, get_bins, get_eval_preset, recall_cap_keys
from detector.utils.dotted import flatten, get_dotted
from detector.utils.errors import SmalldetError
from detector.utils.files import atomic_write_text
from detector.utils.suggest import suggest

from .defaults import (
    AT_MOST,
    CHOICES,
    DEFAULTS,
    DILATION_STAGES,
    FREE_FORM,
    ITEMS,
    NON_DECREASING,
    NULLABLE,
    RANGES,
)

OVERRIDE = "command-line override"

# a decimal number as a user types it: 3, -0.5, .5, 1e-3, 2.5E+4 (not inf, nan, 0x10)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(SmalldetError, ValueError):
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


# ----------------------------------------------------------------------------------- reading


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping.

    PyYAML silently keeps the last one, so a second ``solver:`` block would drop every key of
    the first without a word.
    """


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` may be overridden by the keys written next to it
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # unhashable key: construct_mapping reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} is written twice (first on line {first + 1}); keep one",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error on one line, with its position (every smalldet error is one line)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}{f' ({context})' if context else ''}".split())


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: a config must be UTF-8 text ({err})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config: {err.strerror or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def _bases(data: dict, path: Path) -> list[str]:
    """The ``_base_`` entry of a file as a list of paths (popped from ``data``)."""
    if "_base_" not in data:
        return []
    bases = data.pop("_base_")
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(
            f"{path}: _base_ takes a path or a list of paths (relative to this file), got {bases!r}"
        )
    return bases


def _record(origins: dict[str, str], key: str, value: Any, source: str) -> None:
    """Note that ``source`` set ``key`` (and the keys inside it), forgetting older setters."""
    leaves = flatten(value, key + ".") if isinstance(value, dict) and value else {key: value}
    for leaf in leaves:
        for old in [k for k in origins if _related(k, leaf)]:
            del origins[old]
        origins[leaf] = source


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _source(origins: dict[str, str] | None, *keys: str, default: str = "config") -> str:
    """Who set ``keys`` last: a file, ``command-line override``, or ``default`` if nobody."""
    if not origins:
        return default
    order = {k: i for i, k in enumerate(origins)}
    hits = [k for k in origins if any(_related(k, key) for key in keys)]
    return origins[max(hits, key=order.__getitem__)] if hits else default


def _load_tree(path: Path, origins: dict[str, str], seen: tuple[Path, ...] = ()) -> dict:
    real = path.resolve()
    if real in seen:
        chain = " -> ".join(str(p) for p in (*seen, real))
        raise ConfigError(f"_base_ cycle: {chain}")
    data = _read_yaml(path)
    merged: dict = {}
    for base in _bases(data, path):
        target = path.parent / base
        if not target.is_file():
            raise ConfigError(f"{path}: _base_ {base!r} not found (looked for {target})")
        merged = deep_merge(merged, _load_tree(target, origins, (*seen, real)))
    for key, value in data.items():
        _record(origins, str(key), value, str(path))
    return deep_merge(merged, data)


# ------------------------------------------------------------------------------ keys, types


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "a boolean (true/false)"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a finite number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, dict):
        return "a mapping"
    return f"a {type(default).__name__}"


def _number(value: Any) -> int | float | Decimal | None:
    """``value`` as a number if it is one or is written as one (``"1e-3"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return Decimal(value.strip())
    return None


def _as_schema_type(value: Any, default: Any, dotted: str) -> Any:
    """The value the user meant for a key of ``default``'s type, where YAML read it otherwise.

    YAML 1.1 reads an unquoted ``off``/``on`` as a bool: a string key means the word. It reads
    ``1e-3`` as a string: a number key means the number. A float key holds a float even when
    written ``1``; an int key takes an integral ``1e6``.
    """
    if dotted in NULLABLE or default is None:
        return value
    if isinstance(default, str) and isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return value
    number = _number(value)
    if number is None:
        return value
    if isinstance(default, float):
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        return value  # refused as a non-integer below
    if isinstance(number, Decimal) and number != number.to_integral_value():
        return value
    return int(number)


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
        return isinstance(value, float) and math.isfinite(value)
    if isinstance(default, str):
        # a bin spec or a path may be written as a list/number in YAML; only str is accepted
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


def validate(
    cfg: dict,
    schema: dict = DEFAULTS,
    prefix: str = "",
    source: str = "config",
    origins: dict[str, str] | None = None,
) -> None:
    """Refuse unknown keys (with a suggestion) and values of the wrong type.

    Values YAML read as another type than the user meant (``off``, ``1e-3``) are turned into
    the schema's type in place. ``origins`` (key -> file) names the file that set a bad key;
    without it the error names ``source``.
    """
    for key in list(cfg):
        dotted = f"{prefix}{key}"
        if key not in schema:
            where = _source(origins, dotted, default=source)
            raise ConfigError(f"{where}: unknown key {dotted!r}{suggest(key, list(schema))}")
        default = schema[key]
        cfg[key] = value = _as_schema_type(cfg[key], default, dotted)
        if not _type_ok(default, value, dotted):
            where = _source(origins, dotted, default=source)
            quote = (
                "; quote it: YAML reads a word followed by ':' as a mapping"
                if isinstance(value, dict) and not isinstance(default, dict)
                else ""
            )
            raise ConfigError(
                f"{where}: key {dotted!r} expects {_kind(default)} (default {default!r}), "
                f"got {value!r} ({type(value).__name__}){quote}"
            )
        if isinstance(default, dict) and dotted not in FREE_FORM:
            validate(value, default, dotted + ".", source, origins)


# ------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Bound:
    """A numeric bound parsed from its spec text (``"> 0"``, ``"[0, 1)"``, ``"== 3"``)."""

    text: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Bound:
        num = r"\s*(-?\d+(?:\.\d*)?)\s*"
        if m := re.fullmatch(r"\s*(>=|>|<=|<|==)" + num, text):
            op, v = m.group(1), float(m.group(2))
            return {
                ">": cls(text, lo=v, lo_open=True),
                ">=": cls(text, lo=v),
                "<": cls(text, hi=v, hi_open=True),
                "<=": cls(text, hi=v),
                "==": cls(text, lo=v, hi=v),
            }[op]
        if m := re.fullmatch(r"\s*([\[(])" + num + "," + num + r"([\])])\s*", text):
            lo, hi = float(m.group(2)), float(m.group(3))
            return cls(text, lo, hi, m.group(1) == "(", m.group(4) == ")")
        raise ValueError(f"bound {text!r}: write '> 0', '>= 1', '[0, 1]' or '(0, 1]'")

    def __contains__(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    @property
    def shown(self) -> str:
        """How a message says it: ``> 0``, ``in [0, 1]``."""
        return f"in {self.text}" if self.text[:1] in "[(" else self.text


# parsed once at import: a typo in defaults.py fails every test, not one user's run
_BOUNDS = {key: Bound.parse(text) for key, text in RANGES.items()}
_LENGTHS = {key: Bound.parse(length) for key, (_, length) in ITEMS.items()}


def _close(value: Any, choices) -> str:
    """Only the "did you mean" part of :func:`suggest` (the valid values are listed anyway)."""
    hint = suggest(value, choices, "valid")
    return hint if hint.startswith("; did you mean") else ""


def _is_choice(value: Any, choices: tuple) -> bool:
    if value in choices:
        return True
    # "cuda:N" stands for cuda:0, cuda:1 ...
    return isinstance(value, str) and any(
        isinstance(c, str) and c.endswith(":N") and re.fullmatch(re.escape(c[:-1]) + r"\d+", value)
        for c in choices
    )


def _count(length: Bound) -> str:
    """A length bound in words: ``exactly 2 values``, ``at least 1 value``."""
    n = int(length.lo)
    plural = "value" if n == 1 else "values"
    if length.lo == length.hi:
        return f"exactly {n} {plural}"
    if length.hi == math.inf and not length.lo_open:
        return f"at least {n} {plural}"
    return f"a number of values {length.shown}"


def _set(cfg: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def _items(key: str, value: list, kind: type, fail) -> list:
    """The items of a list key as numbers of ``kind`` (``"1e3"`` read as a number)."""
    out = []
    for item in value:
        number = _number(item)
        if isinstance(number, Decimal):  # written as a string
            integral = number == number.to_integral_value()
            number = int(number) if kind is int and integral else float(number)
        if isinstance(number, float) and not math.isfinite(number):
            number = None
        if kind is int and isinstance(number, float):
            number = int(number) if number.is_integer() else None
        if number is None:
            what = "integers" if kind is int else "finite numbers"
            fail(f"{key} must be a list of {what}, got {value!r}", key)
        out.append(number)
    return out


def check_values(cfg: dict, origins: dict[str, str] | None = None) -> None:
    """Refuse values outside what :mod:`detector.config.defaults` allows.

    Run on a merged config whose keys and types passed :func:`validate`. Items of number lists
    written as strings (``"1e3"``) become numbers in place. ``origins`` (key -> the file that
    set it, or ``command-line override``) lets each message name where the bad value came from.
    """

    def fail(message: str, *keys: str) -> NoReturn:
        raise ConfigError(f"{_source(origins, *keys)}: {message}")

    for key, choices in CHOICES.items():
        value = get_dotted(cfg, key)
        if not _is_choice(value, choices):
            valid = ", ".join(map(str, choices))
            fail(f"unknown {key} {value!r}; valid: {valid}{_close(value, choices)}", key)

    for key, (kind, _) in ITEMS.items():
        value = _items(key, get_dotted(cfg, key), kind, fail)
        _set(cfg, key, value)
        length = _LENGTHS[key]
        if len(value) not in length:
            fail(f"{key} takes {_count(length)}, got {len(value)}: {value!r}", key)
        if key in NON_DECREASING and any(b < a for a, b in zip(value, value[1:])):
            fail(f"{key} must not decrease ([low, high]), got {value!r}", key)

    for key, bound in _BOUNDS.items():
        value = get_dotted(cfg, key)
        if isinstance(value, list):
            if any(v not in bound for v in value):
                noun = "integers" if ITEMS[key][0] is int else "numbers"
                if bound.text.replace(" ", "") == ">0":
                    fail(f"{key} must be positive {noun} (each > 0), got {value!r}", key)
                fail(f"{key} must be {noun} each {bound.shown}, got {value!r}", key)
        elif value not in bound:
            fail(f"{key} must be {bound.shown}, got {value!r}", key)

    for low, high in AT_MOST.items():
        lv, hv = get_dotted(cfg, low), get_dotted(cfg, high)
        if lv > hv:
            fail(f"{low}={lv!r} must be <= {high}={hv!r}", low, high)

    _check_schedule(cfg, fail)
    _check_bins(cfg, fail)
    _check_dilations(cfg, fail)
    _check_trident(cfg, fail)
    _check_tiles(cfg, fail)


def _check_schedule(cfg: dict, fail) -> None:
    """``max_iter`` counts only when training is not by epochs; integer steps fall inside it."""
    s = cfg["solver"]
    by_iter = s["max_epochs"] <= 0
    if by_iter and s["max_iter"] < 1:
        fail(
            f"solver.max_iter must be >= 1, got {s['max_iter']!r} "
            "(or train by epochs: set solver.max_epochs > 0)",
            "solver.max_iter",
            "solver.max_epochs",
        )
    for step in s["steps"]:
        if 0 < step < 1:
            continue
        if step >= 1 and float(step).is_integer() and (not by_iter or step <= s["max_iter"]):
            continue
        its = f"in [1, {s['max_iter']}] (solver.max_iter)" if by_iter else ">= 1"
        fail(
            f"solver.steps: each milestone is a fraction of the run in (0, 1) or an iteration "
            f"{its}, got {step!r} in {s['steps']!r}",
            "solver.steps",
            "solver.max_iter",
        )


def _check_bins(cfg: dict, fail) -> None:
    """Resolve ``eval.bins`` now, so a misspelt preset fails at load and not at the first eval."""
    spec = cfg["eval"]["bins"]
    try:
        get_bins(spec)
    except ValueError as err:
        fail(f"eval.bins={spec!r}: {err}{_close(spec.strip().lower(), PRESETS)}", "eval.bins")


def _check_dilations(cfg: dict, fail) -> None:
    """The free-form ``model.backbone.dilations``: known stages, positive integer rates.

    How many rates a stage takes depends on the depth and is checked when the model is built.
    """
    key = "model.backbone.dilations"
    for stage, rates in get_dotted(cfg, key).items():
        if stage not in DILATION_STAGES:
            valid = ", ".join(DILATION_STAGES)
            fail(
                f"{key}: unknown stage {stage!r}; valid: {valid}{_close(stage, DILATION_STAGES)}",
                key,
            )
        if (
            not isinstance(rates, list)
            or not rates
            or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates)
        ):
            fail(
                f"{key}.{stage} must be a non-empty list of positive integers (one rate per "
                f"block, or per 3x3 conv), got {rates!r}",
                key,
            )


def _range_bound(value: Any) -> float | None:
    """A scale-range bound as a float (``.inf``, ``"inf"`` or ``1e3`` written as text), else None."""
    if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "+inf"):
        return math.inf
    number = _number(value)
    if number is None:
        return None
    number = float(number)
    return None if math.isnan(number) or number == -math.inf else number


def _check_trident(cfg: dict, fail) -> None:
    """``model.trident`` (only when enabled): a single-map variant, strictly increasing branch
    rates, ``test_branch`` naming a branch, and ``ranges`` empty or one ``[low, high]`` pair per
    branch with ``0 <= low < high`` (``high`` may be ``.inf``); the pairs become floats in place.

    Every RPN matcher (iou, nwd, rfla) and RoI matcher (iou, nwd) composes with it: the branch
    routing acts on the labels the matcher gives, so there is nothing to refuse there.
    """
    t = cfg["model"]["trident"]
    if not t["enabled"]:
        return
    variant = cfg["model"]["variant"]
    if variant == "fpn":
        fail(
            "model.trident.enabled=true needs a single-map variant (c5, dc5, dc4): the fpn "
            "variant has one map per level and no dilated stage for the branches to share. "
            "Fix: set model.variant=dc5 (or dc4), or model.trident.enabled=false",
            "model.trident.enabled",
            "model.variant",
        )
    rates = t["branch_rates"]
    if any(b <= a for a, b in zip(rates, rates[1:])):
        fail(
            f"model.trident.branch_rates must be strictly increasing (branch k's receptive field "
            f"grows with k, which the default ranges and the size routing rely on), got {rates!r}",
            "model.trident.branch_rates",
        )
    n = len(rates)
    if t["test_branch"] >= n:
        fail(
            f"model.trident.test_branch={t['test_branch']} but there are {n} branches "
            f"(model.trident.branch_rates={rates!r}): give -1 (all, merged by NMS) or 0-{n - 1}",
            "model.trident.test_branch",
            "model.trident.branch_rates",
        )
    ranges = t["ranges"]
    if not ranges:
        return
    key = "model.trident.ranges"
    example = "[[0, 90], [30, 160], [90, .inf]]"
    if len(ranges) != n:
        fail(
            f"{key} has {len(ranges)} pairs but there are {n} branches (model.trident."
            f"branch_rates={rates!r}): give one [low, high] per branch, e.g. {example}, or [] "
            "for the ranges derived from the receptive fields",
            key,
            "model.trident.branch_rates",
        )
    out = []
    for k, pair in enumerate(ranges):
        bounds = [_range_bound(v) for v in pair] if isinstance(pair, list) else []
        if len(bounds) != 2 or None in bounds or not 0 <= bounds[0] < bounds[1]:
            fail(
                f"{key}[{k}] must be [low, high] px with 0 <= low < high (high may be .inf), "
                f"got {pair!r}; e.g. {example}",
                key,
            )
        out.append(bounds)
    t["ranges"] = out


def tile_window(size: int, scale: float) -> int:
    """The side, in source pixels, of the window a ``size`` px tile at ``scale`` is cut from
    (``size / scale`` rounded half up); the data pipeline and the checks here share it."""
    window = math.floor(size / scale + 0.5)
    if window < 1:
        raise ConfigError(
            f"data.tiles.size={size} at data.tiles.scale={scale:g} is a window of "
            f"{size / scale:.3g} source px, less than one pixel. Fix: raise data.tiles.size or "
            "lower data.tiles.scale"
        )
    return window


def _check_tiles(cfg: dict, fail) -> None:
    """``data.tiles``: a window of at least one pixel that fits the built-in images, and no
    second crop or short-side resize that would undo the tile (only when tiling is on)."""
    t, tr = cfg["data"]["tiles"], cfg["data"]["transforms"]
    if not t["enabled"]:
        return
    keys = ("data.tiles.size", "data.tiles.scale")
    try:
        window = tile_window(t["size"], t["scale"])
    except ConfigError as err:
        fail(str(err), *keys)
    if tr["crop_size"] > 0:
        fail(
            f"data.tiles.enabled=true with data.transforms.crop_size={tr['crop_size']}: the tile "
            "already crops the image, and a second crop would cut the forced objects out of it. "
            "Fix: set data.transforms.crop_size=0 (the tile side is data.tiles.size)",
            "data.transforms.crop_size",
            "data.tiles.enabled",
        )
    if tr["train_scales"]:
        fail(
            f"data.tiles.enabled=true with data.transforms.train_scales={tr['train_scales']}: "
            "resizing each tile to a short side undoes data.tiles.scale. Fix: set "
            "data.transforms.train_scales=[] and set the magnification with data.tiles.scale "
            "(data.transforms.scale_jitter still applies)",
            "data.transforms.train_scales",
            "data.tiles.enabled",
        )
    side = cfg["data"]["builtin"]["image_size"]
    if cfg["data"]["source"] == "builtin" and window > side:
        fail(
            f"data.tiles.size={t['size']} at data.tiles.scale={t['scale']:g} cuts a "
            f"{window}x{window} px window, larger than the built-in images "
            f"(data.builtin.image_size={side}). Fix: set data.tiles.size<="
            f"{max(1, math.floor(side * t['scale']))}, or data.tiles.scale>="
            f"{math.ceil(t['size'] / side * 1000) / 1000:g}, or data.builtin.image_size>={window}",
            *keys,
            "data.builtin.image_size",
        )


# ------------------------------------------------------------------------------ eval preset


def apply_eval_preset(cfg: dict, origins: dict[str, str] | None = None) -> None:
    """Fill in ``eval.preset``'s bins, maxDets, IoU thresholds and model caps, in place.

    A key set at the preset's level or later keeps its value: with ``eval.preset`` in a config
    file, any key a file or an override sets; with ``eval.preset`` as a command-line override,
    only other overrides (without ``origins``: any key that differs from its default). The
    model's test-time caps are raised to at least the preset's values and the largest maxDets,
    so that maxDets can be reached; a cap kept below the largest maxDets is refused, since it
    would cut recall on dense images without a word.
    """
    name = cfg["eval"]["preset"]
    if not name:
        return

    def level(source: str) -> int:
        return 1 if source == OVERRIDE else 0

    preset_level = level(_source(origins, "eval.preset"))

    def explicit(key: str) -> bool:
        if origins is not None:
            setters = [src for k, src in origins.items() if _related(k, key)]
            return any(level(src) >= preset_level for src in setters)
        return get_dotted(cfg, key) != get_dotted(DEFAULTS, key)

    try:
        preset = get_eval_preset(name)
    except ValueError as err:
        raise ConfigError(f"{_source(origins, 'eval.preset')}: eval.preset: {err}") from None
    ev = cfg["eval"]
    for key, value in (
        ("bins", preset.bins),
        ("max_dets", list(preset.max_dets)),
        ("iou_thrs", list(preset.iou_thrs or [])),
    ):
        if not explicit(f"eval.{key}"):
            ev[key] = value
    top = max(ev["max_dets"])
    needs = {key: top for key in recall_cap_keys(cfg["model"]["variant"])}
    for key, value in preset.model_caps:
        needs[key] = max(needs.get(key, 0), value, top)
    for key, need in needs.items():
        value = get_dotted(cfg, key)
        if not explicit(key):
            _set(cfg, key, max(value, need))
        elif value < top and key in recall_cap_keys(cfg["model"]["variant"]):
            raise ConfigError(
                f"{_source(origins, key)}: {key}={value} is below the largest eval.max_dets "
                f"{top} of eval.preset={preset.name!r} (set in {_source(origins, 'eval.preset')})"
                f": the model would stop at {value} per image and cut recall on dense images. "
                f"Fix: drop that setting of {key} (the preset sets it to {need}) or set it "
                f">= {top}"
            )


# --------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"solver.lr=0.01"`` -> (["solver", "lr"], 0.01); the value is parsed as YAML."""
    if not isinstance(text, str):
        raise ConfigError(f"override {text!r} must be a KEY=VALUE string, e.g. solver.lr=0.01")
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like KEY=VALUE, e.g. solver.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r}: key {key!r} has an empty part between dots")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(
            f"override {text!r}: value is not valid YAML: {_yaml_problem(err)}"
        ) from None
    return parts, value


def apply_overrides(cfg: dict, overrides: list[str], origins: dict[str, str] | None = None) -> dict:
    """``cfg`` with each ``KEY=VALUE`` applied, in order; the keys are checked on the way.

    A mapping given to a section merges into it (``model.rpn={matcher: nwd}`` keeps the other
    RPN keys); a free-form key (``model.backbone.dilations``) is replaced whole.
    """
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, (list, tuple)):
        raise ConfigError(
            f"overrides must be a list of KEY=VALUE strings, got {type(overrides).__name__} "
            f"{overrides!r}"
        )
    out = copy.deepcopy(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node, schema, free = out, DEFAULTS, False
        for i, part in enumerate(path[:-1]):
            dotted = ".".join(path[: i + 1])
            if not free:
                if part not in schema:
                    raise ConfigError(
                        f"override {text!r}: unknown key {dotted!r}{suggest(part, list(schema))}"
                    )
                schema = schema[part]
                if not isinstance(schema, dict):
                    raise ConfigError(
                        f"override {text!r}: {dotted!r} is a single value ({_kind(schema)}), "
                        f"not a section with keys; write {dotted}=VALUE"
                    )
                free = dotted in FREE_FORM
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {dotted!r} holds {child!r}, not a mapping, so it has "
                    f"no key {path[i + 1]!r}"
                )
            node = child
        last, key = path[-1], ".".join(path)
        if not free and last not in schema:
            raise ConfigError(
                f"override {text!r}: unknown key {key!r}{suggest(last, list(schema))}"
            )
        sub = None if free else schema[last]
        if isinstance(sub, dict) and key not in FREE_FORM and isinstance(value, dict):
            node[last] = deep_merge(node.get(last) or {}, value)
        else:
            node[last] = value
        if origins is not None:
            _record(origins, key, value, OVERRIDE)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the file (with its bases), then the overrides; keys, types and values
    checked, so everything that can be known from the config alone fails here."""
    cfg: dict = copy.deepcopy(DEFAULTS)
    origins: dict[str, str] = {}
    if path is not None:
        tree = _load_tree(Path(path), origins)
        validate(tree, source=str(path), origins=origins)
        cfg = deep_merge(cfg, tree)
    if overrides:
        cfg = apply_overrides(cfg, overrides, origins)
        validate(cfg, source=OVERRIDE, origins=origins)
    check_values(cfg, origins)
    apply_eval_preset(cfg, origins)
    return _wrap(cfg)


def save_config(cfg: dict, path: str | Path) -> None:
    """Write the resolved config; loading it back gives the same run."""
    data = cfg.to_dict() if isinstance(cfg, Config) else cfg
    atomic_write_text(yaml.safe_dump(data, sort_keys=False), path)
