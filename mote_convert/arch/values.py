"""Typed reads of a Hugging Face config's values: an int, a positive float, a nested object.

config.json comes from users and from many tools; a value of the wrong type must become one error
naming its key (``text_config.hidden_size``), not a ``TypeError`` from an ``int()`` deep in a plan.
"""

from __future__ import annotations

from typing import Any, Mapping

from mote_convert.errors import UnsupportedArchitectureError
from mote_convert.numbers import is_number

MAX_DIM = 2**31  # no size of a real model comes near; GGUF stores them as uint32


def config_int(
    mapping: Mapping[str, Any],
    key: str,
    where: str,
    *,
    default: int | None = None,
    low: int = 1,
    high: int = MAX_DIM,
    purpose: str = "",
) -> int:
    """``mapping[key]``, an integer in ``[low, high]``; ``default`` where the key is absent or null
    (no default: required). ``where`` names it in errors, e.g. ``text_config.hidden_size``."""
    value = mapping.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsupportedArchitectureError(
            f"config.json has no integer {where}{f' (needed for {purpose})' if purpose else ''}"
        )
    if not low <= value <= high:
        raise UnsupportedArchitectureError(f"config.json's {where} is {value}; expected {low} to {high}")
    return value


def config_float(mapping: Mapping[str, Any], key: str, where: str, *, default: float) -> float:
    """``mapping[key]``, a finite positive number; ``default`` where the key is absent or null."""
    value = mapping.get(key)
    if value is None:
        return default
    if not is_number(value) or value <= 0:
        raise UnsupportedArchitectureError(f"config.json's {where} is {value!r}; expected a positive number")
    return float(value)


def config_mapping(mapping: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``mapping[key]``, a JSON object; empty where the key is absent or null."""
    value = mapping.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnsupportedArchitectureError(f"config.json's {where} is {str(value)[:60]!r}; expected an object")
    return value
