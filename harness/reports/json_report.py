"""``iterate-report.json``: the report as JSON (schema ``pytest-iterate/report/v1``)."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_iterate._files import write_atomic
from pytest_iterate.harness.summary import Report, ReportError

__all__ = ["FILENAME", "load", "render", "write"]

FILENAME = "iterate-report.json"


def render(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n"


def write(report: Report, folder: Path) -> Path:
    return write_atomic(Path(folder) / FILENAME, render(report))


def load(path: Path | str) -> Report:
    """Read a report written by :func:`write` (or a folder holding one).

    Raises :class:`ReportError` naming the file and what is wrong with it, and
    ``FileNotFoundError`` when there is no such file.
    """
    p = Path(path)
    if p.is_dir():
        p = p / FILENAME
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReportError(f"{p} is not a pytest-iterate report: not JSON ({exc})") from None
    try:
        return Report.from_json(data)
    except ReportError as exc:
        raise ReportError(f"{p} is not a pytest-iterate report: {exc}") from None
