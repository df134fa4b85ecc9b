"""Report writers, one module per format, and the report dict they all read.

``build_report(run_info, criteria, scenarios)`` makes the dict of DESIGN.md
(schema ``pytest-iterate/report/v1``); ``write_reports(report, folder)`` writes the
chosen formats and returns the paths written::

    report = build_report({"target": "mock"}, [{"id": "latency.e2e_mean", "threshold": 3.0,
                           "unit": "s", "observed": 0.4, "passed": True}], [summarize(...)])
    write_reports(report, Path("reports"))
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_iterate.harness.samples import RequestSample

__all__ = ["ALL_FORMATS", "REPORT_SCHEMA", "build_report", "write_reports"]

REPORT_SCHEMA = "pytest-iterate/report/v1"
ALL_FORMATS = ("json", "md", "html", "benchmark", "prom")


def _criterion(c: Mapping[str, Any]) -> dict[str, Any]:
    if "id" not in c:
        raise ValueError(f"criterion without an 'id': {dict(c)!r}")
    out = {
        "id": str(c["id"]),
        "threshold": c.get("threshold"),
        "unit": c.get("unit", ""),
        "observed": c.get("observed"),
        "passed": c.get("passed"),
    }
    out.update({k: v for k, v in c.items() if k not in out})
    return out


def build_report(
    run_info: Mapping[str, Any],
    criteria: Iterable[Mapping[str, Any]],
    scenarios: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """The report dict: ``{"schema", "run", "criteria", "scenarios"}``.

    ``run`` gets a UTC ``datetime`` unless given; each criterion must have an
    ``id`` and is normalised to ``id, threshold, unit, observed, passed`` (extra keys kept).
    """
    run = dict(run_info)
    run.setdefault("datetime", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    return {
        "schema": REPORT_SCHEMA,
        "run": run,
        "criteria": [_criterion(c) for c in criteria],
        "scenarios": [dict(s) for s in scenarios],
    }


def write_reports(
    report: Mapping[str, Any],
    folder: Path | str,
    formats: Sequence[str] = ALL_FORMATS,
    samples: Mapping[str, list[RequestSample]] | None = None,
) -> list[Path]:
    """Write ``report`` in each of ``formats`` into ``folder`` (created); return the paths.

    ``samples`` (scenario name -> raw samples) lets the HTML plots use every request
    instead of the capped ``timeline`` stored in the report.
    """
    unknown = [f for f in formats if f not in ALL_FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {unknown!r}; valid: {', '.join(ALL_FORMATS)}")
    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for fmt in formats:
        if fmt == "json":
            from pytest_iterate.harness.reports import json_report

            paths.append(json_report.write(report, out_dir))
        elif fmt == "md":
            from pytest_iterate.harness.reports import markdown_report

            paths.append(markdown_report.write(report, out_dir))
        elif fmt == "html":
            from pytest_iterate.harness.reports import html_report

            paths.append(html_report.write(report, out_dir, samples=samples))
        elif fmt == "benchmark":
            from pytest_iterate.harness.reports import benchmark_json

            paths.append(benchmark_json.write(report, out_dir))
        elif fmt == "prom":
            from pytest_iterate.harness.reports import prom_report

            paths.append(prom_report.write(report, out_dir))
    return paths
