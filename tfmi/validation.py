"""Checks for numeric parameters and counts, shared by every layer (imports nothing from tfmi but errors)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

from tfmi.errors import TfmiError


def _show_bound(value: float) -> str:
    """A bound as written by hand: whole numbers in full (``4294967295``), others short (``1e-05``)."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e18 else f"{value:g}"


def describe_range(
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> str:
    """The valid values in words: ``a number >= 0``, ``a positive integer``, ``in (0, 1]``.

    >>> describe_range(0, 1, low_inclusive=False)
    'in (0, 1]'
    >>> describe_range(1, integer=True), describe_range(0, low_inclusive=False)
    ('a positive integer', 'a positive number')
    """
    kind = "an integer" if integer else "a number"
    show = _show_bound
    if high is None and (low, low_inclusive, integer) in ((0, False, False), (1, True, True)):
        return f"a positive {'integer' if integer else 'number'}"
    if low is not None and high is not None:
        interval = f"{'[' if low_inclusive else '('}{show(low)}, {show(high)}{']' if high_inclusive else ')'}"
        return f"an integer in {interval}" if integer else f"in {interval}"
    if low is not None:
        return f"{kind} {'>=' if low_inclusive else '>'} {show(low)}"
    if high is not None:
        return f"{kind} {'<=' if high_inclusive else '<'} {show(high)}"
    return kind


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
    hint: str = "",
) -> Any:
    """Return ``value`` as a Python ``float`` (``int`` when ``integer``) after checking its range.

    Refuses booleans, strings, NaN and infinity. The error names the parameter and the valid range,
    then ``hint`` (e.g. ``"1.0 is usual"``) in parentheses.

    >>> check_number("mmd_weight", 6.5, low=0)
    6.5
    >>> check_number("mmd_weight", -1, low=0)
    Traceback (most recent call last):
    ...
    tfmi.errors.TfmiError: mmd_weight must be a number >= 0, got -1
    """
    valid = isinstance(value, Integral if integer else Real) and not isinstance(value, bool)
    if valid:
        number = int(value) if integer else float(value)
        valid = math.isfinite(number)
        if valid and low is not None:
            valid = number >= low if low_inclusive else number > low
        if valid and high is not None:
            valid = number <= high if high_inclusive else number < high
    if not valid:
        wanted = describe_range(low, high, low_inclusive=low_inclusive, high_inclusive=high_inclusive,
                                integer=integer)
        raise TfmiError(f"{name} must be {wanted}, got {value!r}" + (f" ({hint})" if hint else ""))
    return number


def check_count(value: Any, what: str, minimum: int) -> int:
    """``value`` as an int when it is a whole number (not a bool) >= ``minimum``, else a `TfmiError`.

    >>> check_count(3, "shadows", 1)
    3
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise TfmiError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)
