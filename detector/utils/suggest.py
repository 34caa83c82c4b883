"""The "did you mean" hint used by every validator (config keys, study keys, bin presets)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(word: object, choices: Iterable[object], what: str = "valid keys") -> str:
    """``"; did you mean 'lr'?"`` when a choice is close, else ``"; valid keys: [...]"``."""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; {what}: {sorted(names)}"
