"""Dotted keys (``"model.backbone.depth"``) into nested dicts: get one, or diff two trees."""

from __future__ import annotations

from typing import Any

_MISSING = object()


def get_dotted(tree: Any, dotted: str, default: Any = None) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``; ``default`` when any part is missing."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; empty dicts stay as leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def diff_dotted(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every leaf that differs, sorted by key.

    A key in ``ignore`` skips itself and everything below it (``"log"`` skips ``log.period``).
    A key present on one side only reports ``None`` for the other.
    """
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == ig or key.startswith(ig + ".") for ig in ignore):
            continue
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va != vb:
            out.append((key, None if va is _MISSING else va, None if vb is _MISSING else vb))
    return out
