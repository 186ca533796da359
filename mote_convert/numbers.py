"""What counts as a number in a JSON value (config.json, recipes, index files): the bottom floor that
every layer may ask, so that no layer imports another sideways for it."""

from __future__ import annotations

import math
from typing import Any


def is_int(value: Any) -> bool:
    """A JSON integer (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number (``true`` is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
