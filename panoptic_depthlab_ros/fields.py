"""Checks of configuration values (type, range, finite), each error naming the field and its value.

A checkpoint's metadata is user input: a value that is the wrong type, out of range
or NaN must be refused when the file is loaded, not fail on every frame, allocate
terabytes or give NaN depth later.  ``bool`` is not accepted as a number.
"""

from __future__ import annotations

import math
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, low: int, high: int) -> None:
    """``value`` is an integer in ``low..high``."""
    if not (_is_int(value) and low <= value <= high):
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def check_number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    """``value`` is a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a finite number in {bracket}{low:g}, {high:g}], got {value!r}")


def check_ints(name: str, values: Any, low: int, high: int, *, length: int | None = None, min_length: int = 1) -> None:
    """``values`` is a tuple of integers in ``low..high`` (of ``length`` entries, or at least ``min_length``)."""
    n_ok = isinstance(values, tuple) and (len(values) == length if length is not None else len(values) >= min_length)
    if not (n_ok and all(_is_int(v) and low <= v <= high for v in values)):
        count = f"{length}" if length is not None else f"{min_length} or more"
        raise ValueError(f"{name} must be {count} integers in {low}..{high}, got {_shown(values)}")


def check_numbers(name: str, values: Any, length: int, *, positive: bool = False) -> None:
    """``values`` is a tuple of ``length`` finite numbers (each > 0 with ``positive``)."""
    ok = isinstance(values, tuple) and len(values) == length
    ok = ok and all(
        (_is_int(v) or isinstance(v, float)) and math.isfinite(v) and (v > 0 or not positive) for v in values
    )
    if not ok:
        what = "positive finite numbers" if positive else "finite numbers"
        raise ValueError(f"{name} must be {length} {what}, got {_shown(values)}")


def check_bool(name: str, value: Any) -> None:
    """``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def _shown(values: Any) -> str:
    return repr(list(values)) if isinstance(values, tuple) else repr(values)
