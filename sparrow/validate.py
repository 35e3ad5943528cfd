"""Parameter validation with exact messages: the one way every layer checks its parameters.

Each check raises ``TypeError`` for a value of the wrong type and
``ValueError`` for one out of range, with a message that names the parameter
as the docstrings do ("PE count must be between 1 and 1024, not 0"); tests
assert these messages word for word.
"""

import numbers

__all__ = ["check_int", "check_range", "check_number", "check_bool", "check_choice"]


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value, name, lo, hi):
    """``value`` is an integer in [lo, hi] with lo >= 1: a positive count or width.

    Raises TypeError ``"{name} must be a positive integer, not {value!r}"``
    for a non-integer or one below 1, ValueError ``"{name} must be between
    {lo} and {hi}, not {value}"`` otherwise.
    """
    if not _is_int(value) or value < 1:
        raise TypeError(f"{name} must be a positive integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")
    return int(value)


def check_range(value, name, lo, hi):
    """``value`` is an integer in [lo, hi] (zero and negative bounds allowed: shifts, stages).

    Raises ValueError ``"{name} must be an integer in [{lo}, {hi}], not {value!r}"``.
    """
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return int(value)


def check_number(value, name, lo, hi, lo_open=False):
    """``value`` is a real number in [lo, hi] (or (lo, hi] with ``lo_open``).

    Raises ValueError ``"{name} must be a number in [lo, hi], not {value!r}"``.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not (lo < value if lo_open else lo <= value) or not value <= hi:
        raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}], not {value!r}")
    return value


def check_bool(value, name):
    """``value`` is a bool. Raises TypeError ``"{name} must be a bool, not {value!r}"``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")
    return value


def check_choice(value, name, choices):
    """``value`` is one of ``choices``.

    Raises ValueError ``"{name} must be one of {a, b, c}, not {value!r}"``.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value
