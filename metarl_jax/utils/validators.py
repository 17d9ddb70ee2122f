"""Config and argument validators: each raises ``ValueError`` naming the field.

Every learner config, the runner and the players share these, so a bad value
gets the same clear message wherever it is given.
"""

from __future__ import annotations

from typing import Any, Iterable


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any) -> None:
    """``value`` is an int >= 1 (not a bool)."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_int_at_least(name: str, value: Any, minimum: int) -> None:
    """``value`` is an int >= ``minimum`` (not a bool)."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_positive_int_tuple(name: str, value: Any, *, allow_empty: bool = True) -> None:
    """``value`` is a tuple of positive ints (non-empty unless ``allow_empty``)."""
    if (not isinstance(value, tuple) or (not value and not allow_empty)
            or any(not _is_int(v) or v < 1 for v in value)):
        kind = "a tuple" if allow_empty else "a non-empty tuple"
        raise ValueError(f"{name} must be {kind} of positive integers, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    """``value > 0`` (NaN fails)."""
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def check_non_negative(name: str, value: Any) -> None:
    """``value >= 0`` (NaN fails)."""
    if not value >= 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")


def check_in_unit_interval(name: str, value: Any) -> None:
    """``0 <= value <= 1`` (NaN fails)."""
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_bool(name: str, value: Any) -> None:
    """``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
