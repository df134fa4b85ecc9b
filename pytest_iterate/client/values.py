"""Typed values from what a user typed: one parser per kind, shared by every entry point.

The config (``[tool.iterate]``, ``ITERATE_*``), the plugin's ``--iterate-*`` options and
``iterate-bench``'s flags all read their values through these functions, so ``nan``,
``0`` or ``yes`` mean the same thing everywhere and get the same sentence when wrong.
Each parser takes a string (from the command line or the environment) or an already
typed value (from TOML or Python) and raises :class:`ValueError` with one sentence
naming the value and what would be accepted; callers prefix where it came from.

>>> to_int("4", minimum=1), to_float("0.5", above=0), to_bool("yes"), to_int_list("1,5,10")
(4, 0.5, True, (1, 5, 10))
>>> to_float("nan", above=0)
Traceback (most recent call last):
...
ValueError: 'nan' is not a finite number; give a number > 0
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from pytest_iterate.client.secret import redact_url

__all__ = [
    "to_bool",
    "to_choice",
    "to_env_var_name",
    "to_float",
    "to_float_list",
    "to_http_url",
    "to_int",
    "to_int_list",
    "to_name",
    "to_optional",
]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"", "none", "null"})


def _range(minimum: float | None, above: float | None, maximum: float | None) -> str:
    parts = []
    if minimum is not None:
        parts.append(f">= {minimum:g}")
    if above is not None:
        parts.append(f"> {above:g}")
    if maximum is not None:
        parts.append(f"<= {maximum:g}")
    return " and ".join(parts)


def to_bool(value: object) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case), or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not true or false; give true/false, 1/0, yes/no or on/off")


def to_int(value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number (``"8"`` or ``8``), within the bounds given."""
    bounds = _range(minimum, None, maximum)
    accepted = f"give a whole number {bounds}".rstrip()
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number; {accepted}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number; {accepted}") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{value!r} is out of range; {accepted}")
    return number


def to_float(
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
) -> float:
    """A finite number (``nan`` and ``inf`` are refused), within the bounds given."""
    bounds = _range(minimum, above, maximum)
    accepted = f"give a number {bounds}".rstrip()
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number; {accepted}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number; {accepted}") from None
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number; {accepted}")
    if (
        (minimum is not None and number < minimum)
        or (above is not None and number <= above)
        or (maximum is not None and number > maximum)
    ):
        raise ValueError(f"{value!r} is out of range; {accepted}")
    return number


def to_optional(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    """``parse`` that also takes ``None``, ``""``, ``"none"`` or ``"null"`` as no value."""

    def parse_optional(value: object) -> T | None:
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise ValueError(f"{exc} (or none)") from None

    return parse_optional


def _items(value: object) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Sequence):
        return [str(part).strip() for part in value]
    return [str(value)]


def to_int_list(value: object, *, minimum: int | None = 1) -> tuple[int, ...]:
    """Comma-separated whole numbers (``"1,5,10"``) or a list of them; at least one."""
    items = _items(value)
    bounds = _range(minimum, None, None)
    accepted = f"give comma-separated whole numbers {bounds}, e.g. 1,5,10"
    try:
        numbers = tuple(to_int(item, minimum=minimum) for item in items)
    except ValueError:
        numbers = ()
    if not numbers:
        raise ValueError(f"{value!r} is not a list of whole numbers {bounds}; {accepted}")
    return numbers


def to_float_list(value: object, *, above: float | None = 0.0) -> tuple[float, ...]:
    """Comma-separated finite numbers (``"5,10.5"``) or a list of them; at least one."""
    items = _items(value)
    accepted = f"give comma-separated finite numbers {_range(None, above, None)}, e.g. 5,10"
    try:
        numbers = tuple(to_float(item, above=above) for item in items)
    except ValueError:
        numbers = ()
    if not numbers:
        raise ValueError(f"{value!r} is not a list of numbers {_range(None, above, None)}; {accepted}")
    return numbers


def to_choice(value: object, choices: Sequence[str]) -> str:
    """One of ``choices`` (exact, after trimming spaces)."""
    text = str(value).strip()
    if text not in choices:
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
    return text


def to_http_url(value: object) -> str:
    """An ``http://`` or ``https://`` URL with a host; a trailing ``/`` is dropped."""
    text = str(value).strip()
    if not re.match(r"^https?://[^/\s]+", text):
        shown = redact_url(text)  # credentials written into it are not repeated
        raise ValueError(
            f"{shown!r} is not an http(s):// URL with a scheme; give e.g. http://127.0.0.1:8000/v1"
        )
    return text.rstrip("/")


def to_name(value: object) -> str:
    """A non-empty name without spaces (a model name, say)."""
    text = str(value).strip()
    if not text or any(ch.isspace() for ch in text):
        raise ValueError(f"{value!r} is not a name; give a non-empty name without spaces")
    return text


def to_env_var_name(value: object) -> str:
    """The NAME of an environment variable (letters, digits, ``_``), never its value."""
    text = str(value).strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        # the value is not repeated: a user who typed the key itself here must not see it echoed
        raise ValueError(
            "the value given is not an environment variable name; give the NAME of the variable "
            "(letters, digits, _), never the key itself"
        )
    return text
