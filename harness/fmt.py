"""How numbers are shown: one formatter per kind of value, shared by every report and summary.

>>> seconds(0.0123), seconds(2.5), seconds(0.00004), quantity(366.64, "req/min"), percent(0.0042)
('12.3 ms', '2.500 s', '40 µs', '366.6 req/min', '0.42%')
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFINITIONS", "number", "percent", "quantity", "seconds"]

# shipped inside the package (pytest_iterate/harness/DEFINITIONS.md), so the path exists
# for an installed user as well as in a source checkout
DEFINITIONS = Path(__file__).parent / "DEFINITIONS.md"


def seconds(value: float | None) -> str:
    """Seconds as a short human string: ``0.0123`` -> ``12.3 ms``, ``2.5`` -> ``2.500 s``,
    ``0.00004`` -> ``40 µs`` (under 0.1 ms, where ``0.0 ms`` would hide it)."""
    if value is None or value != value:
        return "-"
    if 0 < abs(value) < 1e-4:
        return f"{value * 1e6:.0f} µs"
    if abs(value) < 1.0:
        return f"{value * 1000:.1f} ms"
    return f"{value:.3f} s"


def quantity(value: float | str | None, unit: str) -> str:
    """A value with its unit, 4 significant digits: ``366.6 req/min``; ``-`` when not measured."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, str):
        return f"{value} {unit}".strip()
    return f"{value:.4g} {unit}".strip()


def percent(fraction: float | None) -> str:
    """A fraction as a percentage: ``0.0042`` -> ``0.42%``."""
    return "-" if fraction is None or fraction != fraction else f"{fraction:.2%}"


def number(value: object, digits: int = 2) -> str:
    """A table cell: ints as they are, floats with ``digits`` decimals, booleans as yes/no."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
