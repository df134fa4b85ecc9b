"""Report writers, one module per format, all reading one typed :class:`Report`.

``write_reports(report, folder)`` writes the chosen formats and returns the paths::

    report = Report.build({"tool": "iterate-bench"}, criteria, [run.summary()])
    write_reports(report, Path("reports"))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pytest_iterate.harness.reports import (
    benchmark_json,
    html_report,
    json_report,
    markdown_report,
    prom_report,
)
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import REPORT_SCHEMA, Report

__all__ = ["ALL_FORMATS", "REPORT_SCHEMA", "Report", "write_reports"]

Samples = Mapping[str, Sequence[RequestSample]]

_WRITERS: dict[str, Callable[[Report, Path, Samples | None], Path]] = {
    "json": lambda report, folder, _samples: json_report.write(report, folder),
    "md": lambda report, folder, _samples: markdown_report.write(report, folder),
    "html": html_report.write,
    "benchmark": lambda report, folder, _samples: benchmark_json.write(report, folder),
    "prom": lambda report, folder, _samples: prom_report.write(report, folder),
}
ALL_FORMATS = tuple(_WRITERS)


def write_reports(
    report: Report,
    folder: Path | str,
    formats: Sequence[str] = ALL_FORMATS,
    samples: Samples | None = None,
) -> list[Path]:
    """Write ``report`` in each of ``formats`` into ``folder`` (created); return the paths.

    ``samples`` (scenario name -> raw samples) lets the HTML plots use every request
    instead of the capped ``timeline`` stored in the report.
    """
    unknown = [f for f in formats if f not in _WRITERS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown!r}; valid: {', '.join(ALL_FORMATS)}")
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_WRITERS[fmt](report, out_dir, samples) for fmt in formats]
