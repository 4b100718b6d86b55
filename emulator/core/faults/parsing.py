"""The value checks fault rules and effects share: :class:`RuleError` and typed readers.

Every reader raises :class:`RuleError` with a message naming the attribute and what it
accepts, so a bad rule from any way in (header, ``fault.`` key, admin API, scenario) gets the
same 400 text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any


class RuleError(ValueError):
    """A rule (or its text form) that cannot be accepted; the message says what is wrong."""


#: The white space a name (key, message, ...) may not consist of alone, stripped from its
#: ends: ASCII's. Every regex dialect's ``\\s`` has these and disagrees on the rest (Python's
#: adds ``\\x1c``-``\\x1f`` and ``\\x85``, ECMA's U+FEFF, Rust's neither), so any other
#: character, a control character included, counts as something.
BLANK = " \t\n\r\f\v"
#: Matches a name that is not blank; the control-plane contract's ``NonBlank`` pattern
#: (contracts/emulator.yaml; a test keeps them equal).
NON_BLANK_PATTERN = r"[^ \t\n\r\f\v]"
NON_BLANK = re.compile(NON_BLANK_PATTERN)


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty or only :data:`BLANK` white space."""
    return NON_BLANK.search(text) is None


def number(name: str, value: Any, *, minimum: float | None = None,
           maximum: float | None = None) -> float:
    """``value`` as a finite float within ``[minimum, maximum]``.

    Raises:
        RuleError: not a number (a bool is not), not finite, or out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleError(f"{name} must be a number, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise RuleError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise RuleError(f"{name} must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise RuleError(f"{name} must be <= {maximum:g}, got {value!r}")
    return float(value)


def integer(name: str, value: Any, low: int | None, high: int | None) -> int:
    """``value`` as an int within ``[low, high]`` (``None``: unbounded); a whole float is
    accepted.

    Raises:
        RuleError: not an integer, or out of bounds.
    """
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise RuleError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise RuleError(f"{name} must be <= {high}, got {value!r}")
    return value


def choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` when it is one of ``allowed``.

    Raises:
        RuleError: anything else (the message lists ``allowed``).
    """
    if not isinstance(value, str) or value not in allowed:
        raise RuleError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def name_text(name: str, value: Any) -> str:
    """A string with more than white space, stripped of :data:`BLANK` at its ends.

    Raises:
        RuleError: not a string, or blank.
    """
    if not isinstance(value, str) or is_blank(value):
        raise RuleError(f"{name} must be a string with more than white space, got {value!r}")
    return value.strip(BLANK)
