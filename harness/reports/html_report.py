"""``iterate-report.html``: a self-contained page (inline CSS and SVG, no network).

Plots: latency distribution, latency over time (from the scheduled send time),
per-stage breakdown, and throughput versus p95 latency when the report holds a
sweep (several scenarios). Inline ``<svg>`` in HTML5 needs no namespace URL, so
the file contains no external reference at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iterate.harness.reports import _svg
from pytest_iterate.harness.reports._fmt import fmt_num, fmt_s
from pytest_iterate.harness.reports.markdown_report import render as render_markdown

if TYPE_CHECKING:
    from pytest_iterate.harness.samples import RequestSample

__all__ = ["FILENAME", "render", "write"]

FILENAME = "iterate-report.html"

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child,.note{text-align:left}.pass{color:#2a7}.fail{color:#c33}
.plot{margin:1em 1em 1em 0;border:1px solid #eee}"""


def _latencies(s: Mapping[str, Any], samples: Mapping[str, list[RequestSample]] | None) -> list[float]:
    name = str(s.get("name"))
    if samples and name in samples:
        return [x.latency_s for x in samples[name]]
    return [float(v) for v in s.get("samples_s") or []]


def _timeline(
    s: Mapping[str, Any], samples: Mapping[str, list[RequestSample]] | None
) -> list[tuple[float, float]]:
    name = str(s.get("name"))
    if samples and name in samples and samples[name]:
        t0 = min(x.scheduled_s for x in samples[name])
        return [(x.scheduled_s - t0, x.latency_s) for x in samples[name]]
    return [(float(p[0]), float(p[1])) for p in s.get("timeline") or []]


def plots(report: Mapping[str, Any], samples: Mapping[str, list[RequestSample]] | None = None) -> list[str]:
    """The SVG plots of ``report`` (empty ones are skipped)."""
    scenarios = list(report.get("scenarios", []))
    out = [
        _svg.histogram(
            "Latency distribution (from scheduled send)",
            [(str(s.get("name")), _latencies(s, samples)) for s in scenarios],
        ),
        _svg.scatter(
            "Latency over time",
            [(str(s.get("name")), _timeline(s, samples)) for s in scenarios],
            "time since first scheduled send (s)",
            "latency (s)",
        ),
    ]
    rows = []
    for s in scenarios:
        segs = [
            (st, float(d["mean"]))
            for st, d in (s.get("stages") or {}).items()
            if isinstance(d, Mapping) and d.get("mean") is not None
        ]
        if segs:
            rows.append((str(s.get("name")), segs))
    out.append(_svg.stacked_bars("Per-stage breakdown (mean)", rows, "mean stage duration"))
    # scenarios marked "sweep" are the points of one load sweep; without marks (an
    # iterate-bench run) every scenario is
    swept = [s for s in scenarios if s.get("sweep")] or scenarios
    sweep = [
        (float(s["throughput_rps"]), float(s["latency_s"]["p95"]), str(s.get("name")))
        for s in swept
        if s.get("throughput_rps") is not None
        and isinstance(s.get("latency_s"), Mapping)
        and s["latency_s"].get("p95") is not None
    ]
    if len(sweep) >= 2:
        out.append(
            _svg.line_chart("Throughput vs p95 latency", sweep, "throughput (req/s)", "p95 latency (s)")
        )
    return [p for p in out if p]


def _table(report: Mapping[str, Any]) -> str:
    rows = []
    for c in report.get("criteria", []):
        verdict = c.get("passed")
        cls, word = ("pass", "pass") if verdict else (("fail", "FAIL") if verdict is False else ("", "skip"))
        rows.append(
            f"<tr><td>{escape(str(c['id']))}</td><td class='{cls}'>{word}</td>"
            f"<td>{escape(fmt_num(c.get('observed'), 3))}</td>"
            f"<td>{escape(fmt_num(c.get('threshold'), 3))}</td><td>{escape(str(c.get('unit', '')))}</td>"
            f"<td class='note'>{escape(str(c.get('note') or ''))}</td></tr>"
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
    for s in report.get("scenarios", []):
        lat = s.get("latency_s") or {}
        lag = s.get("scheduling_lag_s") or {}
        srows.append(
            "<tr>"
            + "".join(
                f"<td>{escape(str(v))}</td>"
                for v in (
                    s.get("name"),
                    s.get("requests"),
                    s.get("errors"),
                    fmt_num(s.get("throughput_rps"), 1),
                    fmt_s(lat.get("mean")),
                    fmt_s(lat.get("p50")),
                    fmt_s(lat.get("p95")),
                    fmt_s(lat.get("p99")),
                    fmt_s(lat.get("max")),
                    fmt_s(lag.get("p99")),
                )
            )
            + "</tr>"
        )
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


def render(report: Mapping[str, Any], samples: Mapping[str, list[RequestSample]] | None = None) -> str:
    run = report.get("run", {})
    meta = "".join(
        f"<li>{escape(str(k))}: {escape(str(v))}</li>"
        for k, v in run.items()
        if isinstance(v, (str, int, float))
    )
    figs = "".join(f"<figure>{p}</figure>" for p in plots(report, samples))
    if not any(s.get("stages") for s in report.get("scenarios", [])):
        figs += "<p>No per-stage timings in this report (raw HTTP runs have no pipeline stages).</p>"
    md = escape(render_markdown(report))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>pytest-iterate report</title>"
        f"<style>{_CSS}</style></head><body><h1>pytest-iterate report</h1><ul>{meta}</ul>{_table(report)}"
        f"<h2>Plots</h2>{figs}<details><summary>Markdown summary</summary><pre>{md}</pre></details>"
        f"</body></html>\n"
    )


def write(
    report: Mapping[str, Any], folder: Path, samples: Mapping[str, list[RequestSample]] | None = None
) -> Path:
    path = Path(folder) / FILENAME
    path.write_text(render(report, samples), encoding="utf-8")
    return path
