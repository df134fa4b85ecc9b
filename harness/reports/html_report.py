"""``iterate-report.html``: a self-contained page (inline CSS and SVG, no network).

Plots (:mod:`._svg`): the latency distribution as a cumulative curve with p50/p95/p99
marked, scenarios answered entirely from the cache in a chart of their own, latency
over time (from the scheduled send time), the per-stage breakdown, and throughput
versus p95 latency when the report holds a sweep (several load levels). Charts scale
with the page; legends sit below the plot area. Inline ``<svg>`` in HTML5 needs no namespace URL, so
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

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1.5em;max-width:1200px;color:#222;
line-height:1.4}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child,.note{text-align:left}.pass{color:#2a7}
.fail{color:#c33}figure{margin:1.5em 0}svg.plot{display:block;width:100%;max-width:1100px;height:auto;
border:1px solid #eee}figcaption{color:#555;font-size:.9em;max-width:1100px}
.wide{overflow-x:auto}li{overflow-wrap:anywhere}pre{white-space:pre-wrap;overflow-wrap:anywhere}
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


def cache_only(s: ScenarioSummary) -> bool:
    """Every request of the scenario was answered from a cache: it measures the cache."""
    return bool(s.requests) and s.cache.hits >= s.requests


def _level(s: ScenarioSummary) -> float | None:
    """The offered load of a sweep point: its concurrency, else its rate."""
    if s.concurrency is not None:
        return float(s.concurrency)
    rate = s.info.get("rate_rps")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        return float(rate)
    kind, _, value = (s.load or s.name).partition(":")
    try:
        return float(value) if kind in ("closed", "rate", "poisson") else None
    except ValueError:
        return None


def plots(report: Report, samples: Samples | None = None) -> list[tuple[str, str]]:
    """The report's charts as ``(svg, caption)``; empty ones are left out."""
    endpoint = [s for s in report.scenarios if not cache_only(s)]
    cached = [s for s in report.scenarios if cache_only(s)]
    out = [
        (
            _svg.cdf_chart(
                "Latency distribution (cumulative, from the scheduled send)",
                [(s.name, _latencies(s, samples)) for s in endpoint],
            ),
            "Share of requests answered within a latency; dots and dashed lines mark p50, p95 and p99. "
            "A log axis is used when latencies span more than 20x.",
        ),
        (
            _svg.cdf_chart(
                "Answered from the cache (kept apart: it measures the cache, not the endpoint)",
                [(s.name, _latencies(s, samples)) for s in cached],
            ),
            "Scenarios whose every request came from the response cache.",
        ),
        (
            _svg.scatter(
                "Latency over time",
                [(s.name, _timeline(s, samples)) for s in endpoint],
                "time since the first scheduled send",
                "latency",
            ),
            "Each request at its scheduled send time; a stall shows as a ramp of late requests.",
        ),
    ]
    rows = []
    for s in report.scenarios:
        segs = [(st, d.mean) for st, d in s.stages.items() if d.mean is not None]
        if segs:
            rows.append((s.name, segs))
    out.append((_svg.stacked_bars("Per-stage breakdown (mean)", rows, "mean stage duration"), ""))
    # scenarios marked "sweep" are the points of one load sweep; without marks (an
    # iterate-bench run) every scenario is; answers from the cache are not load points
    swept = [s for s in endpoint if s.sweep] or endpoint
    sweep = [
        # a scenario whose load level is unknown is a level of its own, after the known ones
        (s.throughput_rps, s.latency_s.p95, s.name, level if level is not None else 1e12 + i)
        for i, s in enumerate(swept)
        if s.throughput_rps is not None and s.latency_s.p95 is not None
        for level in (_level(s),)
    ]
    if len(sweep) >= 2:
        out.append(
            (
                _svg.line_chart("Throughput vs p95 latency", sweep, "throughput (req/s)", "p95 latency"),
                "One point per scenario; the line joins the load levels in order (one point per level).",
            )
        )
    return [(svg, caption) for svg, caption in out if svg]


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
            "<h2>Criteria</h2><div class='wide'><table><tr><th>id</th><th>result</th><th>observed</th>"
            "<th>threshold</th>"
            "<th>unit</th><th class='note'>note</th></tr>" + "".join(rows) + "</table></div>"
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
            f"{s.cache.hit_rate * 100:.0f} %",
            "-" if s.max_inflight is None else s.max_inflight,
        )
        srows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in cells) + "</tr>")
    scen = (
        (
            "<h2>Scenarios</h2><div class='wide'><table><tr><th>scenario</th><th>requests</th>"
            "<th>errors</th><th>req/s</th>"
            "<th>mean</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>lag p99</th><th>cache hits</th>"
            "<th>in flight max</th></tr>" + "".join(srows) + "</table></div>"
        )
        if srows
        else ""
    )
    wrows = [
        "<tr>"
        + "".join(
            f"<td>{escape(str(v))}</td>"
            for v in (
                s.name,
                w.worker,
                w.label or "-",
                w.requests,
                w.errors,
                seconds(w.scheduling_lag_s.p50),
                seconds(w.scheduling_lag_s.p99),
                "-" if w.max_inflight is None else w.max_inflight,
            )
        )
        + "</tr>"
        for s in report.scenarios
        for w in s.workers
    ]
    work = (
        (
            "<h2>Workers</h2><p>The statistics above are over every worker's samples, merged.</p>"
            "<div class='wide'><table><tr><th>scenario</th><th>worker</th><th>where</th><th>requests</th>"
            "<th>errors</th><th>lag p50</th><th>lag p99</th><th>in flight max</th></tr>"
            + "".join(wrows)
            + "</table></div>"
        )
        if wrows
        else ""
    )
    return crit + scen + work


def render(report: Report, samples: Samples | None = None) -> str:
    meta = "".join(
        f"<li>{escape(str(k))}: {escape(str(v))}</li>" for k, v in report.run.items() if v is not None
    )
    figs = "".join(
        f"<figure>{svg}" + (f"<figcaption>{escape(caption)}</figcaption>" if caption else "") + "</figure>"
        for svg, caption in plots(report, samples)
    )
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
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<title>pytest-iterate report</title>"
        f"<style>{_CSS}</style></head><body><h1>pytest-iterate report</h1>{banner}<ul>{meta}</ul>"
        f"{_table(report)}"
        f"<h2>Plots</h2>{figs}<details><summary>Markdown summary</summary><pre>{md}</pre></details>"
        f"</body></html>\n"
    )


def write(report: Report, folder: Path, samples: Samples | None = None) -> Path:
    return write_atomic(Path(folder) / FILENAME, render(report, samples))
