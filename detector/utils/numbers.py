"""Is a JSON or config value a number? (``True`` is an int in Python, but never a number here.)"""

from __future__ import annotations

from typing import Any


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
