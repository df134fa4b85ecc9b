"""Small number formatting shared by the text reports."""

from __future__ import annotations

from typing import Any

__all__ = ["fmt_num", "fmt_s"]


def fmt_s(value: Any) -> str:
    """Seconds as a short human string: ``0.0123`` -> ``12.3 ms``."""
    if value is None:
        return "-"
    v = float(value)
    if abs(v) < 1.0:
        return f"{v * 1000:.1f} ms"
    return f"{v:.3f} s"


def fmt_num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
