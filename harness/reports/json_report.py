"""``iterate-report.json``: the report dict as JSON (schema ``pytest-iterate/report/v1``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FILENAME", "load", "render", "write"]

FILENAME = "iterate-report.json"


def _clean(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def render(report: Mapping[str, Any]) -> str:
    return json.dumps(_clean(report), indent=2, sort_keys=False, default=str) + "\n"


def write(report: Mapping[str, Any], folder: Path) -> Path:
    path = Path(folder) / FILENAME
    path.write_text(render(report), encoding="utf-8")
    return path


def load(path: Path | str) -> dict[str, Any]:
    """Read a report written by :func:`write` (or a folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    data = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "scenarios" not in data:
        raise ValueError(f"{p} is not a pytest-iterate report (no 'scenarios' key)")
    return data
