"""``iterate-report.html``: a self-contained page (inline CSS and SVG, no network).

Plots: latency distribution, latency over time (from the scheduled send time),
per-stage breakdown, and throughput versus p95 latency when the report holds a
sweep (several scenarios). Inline ``<svg>`` in HTML5 needs no namespace URL, so
the file contains no external reference at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

from pytest_iterate._files import write_atomic
from pytest_iterate.harness.fmt import number, seconds
from pytest_iterate.harness.reports import _svg
from pytest_iterate.harness.reports.markdown_report import render as render_markdown
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import Report, ScenarioSummary

__all__ = ["FILENAME", "render", "write"]

FILENAME = "iterate-report.html"

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child,.note{text-align:left}.pass{color:#2a7}.fail{color:#c33}
.plot{margin:1em 1em 1em 0;border:1px solid #eee}
.banner{background:#fdecea;border:1px solid #c33;color:#900;padding:.6em 1em;font-weight:bold}"""


Samples = Mapping[str, Sequence[RequestSample]]


def _latencies(s: ScenarioSummary, samples: Samples | None) -> list[float]:
    if samples and s.name in samples:
        return [x.latency_s for x in samples[s.name]]
    return list(s.samples_s)


def _timeline(s: ScenarioSummary, samples: Samples | None) -> list[tuple[float, float]]:
    if samples and samples.get(s.name):
        t0 = min(x.scheduled_s for x in samples[s.name])
        return [(x.scheduled_s - t0, x.latency_s) for x in samples[s.name]]
    return [(offset, latency) for offset, latency, _ok in s.timeline]


def plots(report: Report, samples: Samples | None = None) -> list[str]:
    """The SVG plots of ``report`` (empty ones are skipped)."""
    scenarios = report.scenarios
    out = [
        _svg.histogram(
            "Latency distribution (from scheduled send)",
            [(s.name, _latencies(s, samples)) for s in scenarios],
        ),
        _svg.scatter(
            "Latency over time",
            [(s.name, _timeline(s, samples)) for s in scenarios],
            "time since first scheduled send (s)",
            "latency (s)",
        ),
    ]
    rows = []
    for s in scenarios:
        segs = [(st, d.mean) for st, d in s.stages.items() if d.mean is not None]
        if segs:
            rows.append((s.name, segs))
    out.append(_svg.stacked_bars("Per-stage breakdown (mean)", rows, "mean stage duration"))
    # scenarios marked "sweep" are the points of one load sweep; without marks (an
    # iterate-bench run) every scenario is
    swept = [s for s in scenarios if s.sweep] or list(scenarios)
    sweep = [
        (s.throughput_rps, s.latency_s.p95, s.name)
        for s in swept
        if s.throughput_rps is not None and s.latency_s.p95 is not None
    ]
    if len(sweep) >= 2:
        out.append(
            _svg.line_chart("Throughput vs p95 latency", sweep, "throughput (req/s)", "p95 latency (s)")
        )
    return [p for p in out if p]


def _table(report: Report) -> str:
    rows = []
    for c in report.criteria:
        cls, word = {"PASS": ("pass", "pass"), "FAIL": ("fail", "FAIL"), "SKIP": ("", "skip")}[c.verdict]
        rows.append(
            f"<tr><td>{escape(c.id)}</td><td class='{cls}'>{word}</td>"
            f"<td>{escape(number(c.observed, 3))}</td>"
            f"<td>{escape(number(c.threshold, 3))}</td><td>{escape(c.unit)}</td>"
            f"<td class='note'>{escape(c.note)}</td></tr>"
        )
    crit = (
        (
            "<h2>Criteria</h2><table><tr><th>id</th><th>result</th><th>observed</th><th>threshold</th>"
            "<th>unit</th><th class='note'>note</th></tr>" + "".join(rows) + "</table>"
        )
        if rows
        else ""
    )
    srows = []
    for s in report.scenarios:
        lat = s.latency_s
        cells = (
            s.name,
            s.requests,
            s.errors,
            number(s.throughput_rps, 1),
            seconds(lat.mean),
            seconds(lat.p50),
            seconds(lat.p95),
            seconds(lat.p99),
            seconds(lat.max),
            seconds(s.scheduling_lag_s.p99),
        )
        srows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in cells) + "</tr>")
    scen = (
        (
            "<h2>Scenarios</h2><table><tr><th>scenario</th><th>requests</th><th>errors</th><th>req/s</th>"
            "<th>mean</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>lag p99</th></tr>"
            + "".join(srows)
            + "</table>"
        )
        if srows
        else ""
    )
    return crit + scen


def render(report: Report, samples: Samples | None = None) -> str:
    meta = "".join(
        f"<li>{escape(str(k))}: {escape(str(v))}</li>" for k, v in report.run.items() if v is not None
    )
    figs = "".join(f"<figure>{p}</figure>" for p in plots(report, samples))
    if not any(s.stages for s in report.scenarios):
        figs += "<p>No per-stage timings in this report (raw HTTP runs have no pipeline stages).</p>"
    md = escape(render_markdown(report))
    banner = (
        ""
        if report.complete
        else f"<div class='banner' role='alert'>Incomplete run: "
        f"{escape(report.incomplete_reason or 'no reason recorded')}. It is not compared with a baseline "
        f"and is never saved as one.</div>"
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>pytest-iterate report</title>"
        f"<style>{_CSS}</style></head><body><h1>pytest-iterate report</h1>{banner}<ul>{meta}</ul>"
        f"{_table(report)}"
        f"<h2>Plots</h2>{figs}<details><summary>Markdown summary</summary><pre>{md}</pre></details>"
        f"</body></html>\n"
    )


def write(report: Report, folder: Path, samples: Samples | None = None) -> Path:
    return write_atomic(Path(folder) / FILENAME, render(report, samples))
