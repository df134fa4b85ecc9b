"""The report's charts: round ticks with units, legends outside the data, cache-only apart.

The tick check parses every tick label of every chart of reports built from latencies at
very different scales (microsecond cache hits, millisecond services, second-long LLM
calls, one retry outlier) and fails on a label that is not a round number or, on a time
axis, has no unit.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from pathlib import Path

import pytest

from pytest_iterate.harness.reports import _svg, write_reports
from pytest_iterate.harness.reports.html_report import plots
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import Report, ScenarioSummary

_UNITS = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}
_LABEL = re.compile(r"^(-?\d+(?:\.\d+)?)(?: (µs|ms|s|%))?$")
_AXIS = re.compile(r'<g class="axis (x|y)" data-kind="(\w+)" data-log="(\d)">(.*?)</g>', re.S)
_TICK = re.compile(r'<text class="tick"[^>]*>([^<]*)</text>')


def _samples(
    seed: int, base: float, n: int = 300, *, outlier: float | None = None, cache: bool = False
) -> list[RequestSample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = i * 0.013
        lat = base * (1 + rng.random() * 0.5)
        if outlier is not None and i == n // 2:
            lat = outlier
        out.append(
            RequestSample(
                scheduled_s=t,
                start_s=t,
                end_s=t + lat,
                cache_tier="memory" if cache else None,
                stages={"llm_call": lat * 0.9, "store": lat * 0.05},
            )
        )
    return out


def _reports() -> list[Report]:
    def s(name: str, samples: list[RequestSample], **kw: object) -> ScenarioSummary:
        wall = max(x.end_s for x in samples) - min(x.scheduled_s for x in samples)
        return summarize(name, samples, wall).replace(**kw)

    return [
        Report.build(
            {},
            [],
            [
                s("closed:1", _samples(1, 0.0061), concurrency=1),
                s("closed:5", _samples(2, 0.0089), concurrency=5),
                s("closed:10", _samples(3, 0.0231, outlier=0.7612), concurrency=10),
            ],
        ),
        Report.build(
            {},
            [],
            [
                s("rate:2", _samples(4, 1.87)),
                s("rate:4", _samples(5, 2.54)),
                s("repeat", _samples(6, 0.000254, cache=True)),
            ],
        ),
        Report.build({}, [], [s("poisson:50", _samples(7, 0.000731, n=40))]),
        Report.build({}, [], [s("one", _samples(8, 0.05, n=1))]),
    ]


def _is_round_sequence(values: list[float], log: bool) -> bool:
    """Linear: equal steps of 1, 2 or 5 x 10^k, every value a multiple of the step.
    Log: every value 1, 2 or 5 x 10^k."""
    if log:
        return all(f"{v:.1e}"[0] in "125" and f"{v:.1e}"[1:4] == ".0e" for v in values)
    steps = {round(b - a, 12) for a, b in itertools.pairwise(values)}
    if len(steps) != 1:
        return False
    (step,) = steps
    mantissa = step / 10 ** math.floor(math.log10(step))
    return any(math.isclose(mantissa, m) for m in (1, 2, 5)) and all(
        math.isclose(v / step, round(v / step), abs_tol=1e-6) for v in values
    )


def _axes(svg: str) -> list[tuple[str, str, bool, list[str]]]:
    return [(xy, kind, log == "1", _TICK.findall(body)) for xy, kind, log, body in _AXIS.findall(svg)]


@pytest.mark.parametrize("index", range(4))
def test_every_tick_is_round_and_time_ticks_carry_a_unit(index: int) -> None:
    report = _reports()[index]
    charts = [svg for svg, _ in plots(report)]
    assert charts
    checked = 0
    for svg in charts:
        for xy, kind, log, labels in _axes(svg):
            assert len(labels) >= 2, (xy, kind, labels)
            values = []
            for label in labels:
                m = _LABEL.match(label)
                assert m, f"not a round label: {label!r}"
                value, unit = float(m.group(1)), m.group(2)
                if kind == "time":
                    assert unit in _UNITS, f"time tick without a unit: {label!r}"
                    value *= _UNITS[unit]
                elif kind == "percent":
                    assert unit == "%", label
                else:
                    assert unit is None, label
                values.append(value)
            assert _is_round_sequence(values, log), (kind, labels)
            if kind == "time" and not log:  # one unit along a linear axis
                assert len({lab.split()[-1] for lab in labels}) == 1, labels
            checked += 1
    assert checked >= 2


def test_the_check_itself_catches_bad_ticks() -> None:
    assert not _is_round_sequence([0.0006, 0.2542, 0.7614], log=False)  # the old 0.6m/254.2m/761.4m
    assert not _is_round_sequence([0.0, 0.3, 0.6], log=False)
    assert not _is_round_sequence([0.003, 0.03], log=True)
    assert _is_round_sequence([0.0, 0.02, 0.04], log=False) and _is_round_sequence(
        [0.001, 0.002, 0.005], log=True
    )
    assert not _LABEL.match("254.2m") and not _LABEL.match("0.6m")


@pytest.mark.parametrize(
    ("values", "log", "labels"),
    [
        (
            [0.0061, 0.0093],
            False,
            ["6 ms", "7 ms", "8 ms", "9 ms", "10 ms"],
        ),
        ([0.2, 1.4], False, ["0.0 s", "0.5 s", "1.0 s", "1.5 s"]),
        ([0.0003, 0.02], None, ["200 µs", "500 µs", "1 ms", "2 ms", "5 ms", "10 ms", "20 ms"]),
        ([0.00001, 30.0], None, ["10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s", "10 s", "100 s"]),
    ],
)
def test_time_axis_labels(values: list[float], log: bool | None, labels: list[str]) -> None:
    axis = _svg.Axis.time(values, "latency", log=log)
    assert list(axis.labels) == labels


def test_a_retry_outlier_gets_a_log_axis_instead_of_squashing_the_rest() -> None:
    (cdf, *_rest) = [svg for svg, _ in plots(_reports()[0])]
    (x, _y) = _axes(cdf)[:2]
    assert x[1] == "time" and x[2] is True  # 6 ms .. 761 ms: more than 20x
    assert "(log scale)" in cdf


def test_percentiles_are_marked_and_named() -> None:
    report = _reports()[0]
    cdf = plots(report)[0][0]
    assert cdf.count('class="mark"') == 6  # p50, p95, p99: a dashed line and a label each
    for s in report.scenarios:
        for q in ("p50", "p95", "p99"):
            assert f"<title>{s.name} {q} " in cdf
    assert "closed:5</text>" not in cdf and "p50 " in cdf


def test_legends_sit_below_the_plot_area() -> None:
    for report in _reports():
        for svg, _ in plots(report):
            frame = re.search(
                r'<rect class="frame" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', svg
            )
            assert frame, svg[:200]
            bottom = float(frame.group(1)) + float(frame.group(2))
            for top in re.findall(r'<g class="legend" transform="translate\([\d.]+,([\d.]+)\)">', svg):
                assert float(top) > bottom + 30  # below the x tick labels too


def test_charts_scale_with_the_page() -> None:
    for svg, _ in plots(_reports()[1]):
        assert re.match(r'<svg class="plot" viewBox="0 0 \d+ \d+"', svg)
        assert " width=" not in svg.split(">", 1)[0]  # no fixed size: the page's CSS sets width 100%
        sizes = [float(v) for v in re.findall(r'font-size="([\d.]+)"', svg)]
        assert min(sizes) >= 11


def test_cache_only_scenarios_are_kept_apart() -> None:
    charts = plots(_reports()[1])
    endpoint, cached = charts[0][0], charts[1][0]
    assert "rate:2" in endpoint and "repeat" not in endpoint
    assert "Answered from the cache" in cached and "repeat" in cached and "rate:2" not in cached
    over_time = next(svg for svg, _ in charts if "Latency over time" in svg)
    assert "repeat" not in over_time


def test_throughput_line_never_joins_two_points_at_the_same_level(tmp_path: Path) -> None:
    def s(name: str, base: float, level: int) -> ScenarioSummary:
        return summarize(name, _samples(level, base), 4.0).replace(concurrency=level, sweep=True)

    scenarios = [s("concurrency_5", 0.05, 5), s("standard", 0.08, 10), s("concurrency_10", 0.09, 10)]
    report = Report.build({}, [], scenarios)
    line = next(svg for svg, _ in plots(report) if "Throughput vs p95" in svg)
    (points,) = re.findall(r'<polyline[^>]*points="([^"]+)"', line)
    assert len(points.split()) == 2  # levels 5 and 10: one segment; the second level-10 point stands alone
    assert line.count("<circle") == 3
    write_reports(report, tmp_path, formats=("html",))
    assert "concurrency_10" in (tmp_path / "iterate-report.html").read_text()


def test_tables_show_the_hit_rate_and_the_most_requests_in_flight(tmp_path: Path) -> None:
    scenario = summarize("closed:7", _samples(9, 0.01, n=20), 1.0).replace(max_inflight=7, concurrency=7)
    cached = summarize("repeat", _samples(10, 0.0002, n=20, cache=True), 0.1)
    write_reports(Report.build({}, [], [scenario, cached]), tmp_path, formats=("md", "html"))
    md = (tmp_path / "iterate-report.md").read_text()
    assert "| cache hit | in flight max |" in md
    assert re.search(r"^\| closed:7 \|.*\| 0 % \| 7 \|$", md, re.M) and re.search(
        r"^\| repeat \|.*\| 100 % \| - \|$", md, re.M
    )
    html = (tmp_path / "iterate-report.html").read_text()
    assert "<th>cache hits</th><th>in flight max</th>" in html and "<td>0 %</td><td>7</td>" in html
