"""Inline-SVG charts for the HTML report: round ticks, units on time axes, legends outside.

No plotting library: the report must stay one small offline file, and the charts it
needs (a latency CDF, a scatter over time, stacked bars, a throughput line) are a few
hundred lines. The parts a reader relies on are explicit here:

* :func:`linear_ticks` / :func:`log_ticks`: ticks at 1-2-5 multiples of a power of ten
  (``0, 20, 40 ms``; ``1, 2, 5, 10 ms``), the axis ending on a tick;
* :class:`Axis`: a scale plus its tick labels; a time axis labels every tick with its
  unit (``µs``, ``ms``, ``s``) and a log axis when the values span more than 20x, so one
  retry outlier does not squash the rest;
* every chart scales with the page (``viewBox``, ``width: 100%`` in the page's CSS) and
  keeps its legend below the plot area, never over the data.

Tick labels carry ``class="tick"`` inside ``<g class="axis" data-kind=...>`` so a test
can read them back (``tests/unit/harness/test_harness_svg.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from pytest_iterate.harness.fmt import seconds
from pytest_iterate.harness.summary import percentile

__all__ = [
    "PALETTE",
    "Axis",
    "cdf_chart",
    "line_chart",
    "linear_ticks",
    "log_ticks",
    "scatter",
    "stacked_bars",
    "time_label",
]

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
W = 760  # viewBox width; the page scales it
ML, MR, MT = 78, 46, 40  # left (y tick labels), right (percentile marks), top (title)
PH = 270  # plot height
AXIS_GAP = 44  # below the plot: x tick labels and the x axis title
FONT = "font-family:system-ui,sans-serif"
LOG_SPAN = 20.0  # a positive axis whose values span more than this factor is drawn log-scaled


# -- ticks ----------------------------------------------------------------------------------
def _nice_step(span: float, target: int) -> float:
    raw = span / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * mag >= raw * (1 - 1e-9):
            return m * mag
    return 10.0 * mag  # pragma: no cover


def linear_ticks(lo: float, hi: float, target: int = 5, *, integer: bool = False) -> list[float]:
    """Ticks ``k * step`` (step 1, 2 or 5 times a power of ten) from at or below ``lo`` to at
    or above ``hi``, about ``target`` intervals. ``integer``: step at least 1.

    >>> linear_ticks(0.0123, 0.0587)
    [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    >>> linear_ticks(0, 7, integer=True)
    [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"ticks need finite bounds, got {lo!r}..{hi!r}")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
        if lo < 0 <= lo + pad:
            lo = 0.0
    step = _nice_step(hi - lo, target)
    if integer:
        step = max(1.0, step)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(k * step, digits) for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks on a log axis: 1, 2, 5 per decade over up to three decades, then decades only;
    the first at or below ``lo``, the last at or above ``hi`` (both > 0).

    >>> log_ticks(0.0031, 0.047)
    [0.002, 0.005, 0.01, 0.02, 0.05]
    >>> log_ticks(0.00004, 2.5)
    [1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0]
    """
    if not (lo > 0 and hi > 0):
        raise ValueError(f"a log axis needs values > 0, got {lo!r}..{hi!r}")
    if hi < lo:
        lo, hi = hi, lo
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mantissas = (1.0, 2.0, 5.0) if d1 - d0 <= 3 else (1.0,)
    candidates = sorted({float(f"{m * 10.0**d:.12g}") for d in range(d0 - 1, d1 + 1) for m in mantissas})
    below = [t for t in candidates if t <= lo * (1 + 1e-9)]
    above = [t for t in candidates if t >= hi * (1 - 1e-9)]
    start, end = (below[-1] if below else candidates[0]), (above[0] if above else candidates[-1])
    return [t for t in candidates if start <= t <= end]


# -- labels ---------------------------------------------------------------------------------
_TIME_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"))


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0


def _time_unit(value: float) -> tuple[float, str]:
    for scale, unit in _TIME_UNITS:
        if abs(value) >= scale * (1 - 1e-9):
            return scale, unit
    return _TIME_UNITS[-1]


def time_label(value: float, step: float | None = None) -> str:
    """Seconds as a round label with its unit: ``0.05`` -> ``50 ms``; on a linear axis of
    ``step`` the unit and decimals follow the step, so neighbours read alike."""
    if step is None:  # one tick of a log axis: its own unit
        scale, unit = _time_unit(value)
        shown = value / scale
        return f"{shown:.{_decimals(_mantissa_step(shown))}f} {unit}"
    scale, unit = _time_unit(step)
    return f"{value / scale:.{_decimals(step / scale)}f} {unit}"


def _mantissa_step(shown: float) -> float:
    """The place of a 1-2-5 value's leading digit (``0.5`` -> 0.1; ``200`` -> 100)."""
    return 10.0 ** math.floor(math.log10(abs(shown))) if shown else 1.0


def _time_unit_for_axis(ticks: Sequence[float]) -> tuple[float, str]:
    top = max(abs(t) for t in ticks)
    return _time_unit(top)


def number_label(value: float, step: float, unit: str = "") -> str:
    text = f"{value:.{_decimals(step)}f}"
    return f"{text} {unit}" if unit else text


@dataclass(frozen=True, slots=True)
class Axis:
    """A scale over ``ticks`` (its ends are the first and last tick) and how to label them.

    ``kind``: ``time`` (seconds, labelled with units), ``count``, ``percent``, ``number``.
    """

    ticks: tuple[float, ...]
    labels: tuple[str, ...]
    log: bool = False
    kind: str = "number"
    title: str = ""

    @property
    def lo(self) -> float:
        return self.ticks[0]

    @property
    def hi(self) -> float:
        return self.ticks[-1]

    def frac(self, value: float) -> float:
        """Where ``value`` falls between the ends, 0..1 (clamped)."""
        if self.log:
            value = max(value, self.lo)
            lo, hi, v = math.log10(self.lo), math.log10(self.hi), math.log10(value)
        else:
            lo, hi, v = self.lo, self.hi, value
        return 0.5 if hi <= lo else min(1.0, max(0.0, (v - lo) / (hi - lo)))

    @classmethod
    def time(
        cls, values: Sequence[float], title: str, *, log: bool | None = None, zero: bool = False
    ) -> Axis:
        """A seconds axis over ``values``; log-scaled when they span more than 20x (unless told)."""
        finite = [v for v in values if math.isfinite(v)]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
        positive = lo > 0
        if log is None:
            log = positive and hi / lo > LOG_SPAN
        if log and positive:
            ticks = log_ticks(lo, hi)
            return cls(tuple(ticks), tuple(time_label(t) for t in ticks), True, "time", title)
        ticks = linear_ticks(0.0 if zero or lo <= 0 else lo, hi)
        step = ticks[1] - ticks[0]
        scale, unit = _time_unit_for_axis(ticks)  # the largest tick's unit, decimals from the step
        labels = tuple(f"{t / scale:.{_decimals(step / scale)}f} {unit}" for t in ticks)
        return cls(tuple(ticks), labels, False, "time", title)

    @classmethod
    def count(cls, hi: float, title: str) -> Axis:
        ticks = linear_ticks(0.0, max(1.0, hi), integer=True)
        return cls(tuple(ticks), tuple(f"{t:.0f}" for t in ticks), False, "count", title)

    @classmethod
    def number(cls, values: Sequence[float], title: str, unit: str = "", *, zero: bool = True) -> Axis:
        finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
        ticks = linear_ticks(0.0 if zero else min(finite), max(finite))
        step = ticks[1] - ticks[0]
        return cls(tuple(ticks), tuple(number_label(t, step, unit) for t in ticks), False, "number", title)

    @classmethod
    def percent(cls, title: str) -> Axis:
        ticks = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0)
        return cls(ticks, tuple(f"{t:.0f} %" for t in ticks), False, "percent", title)


# -- frame ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Box:
    x0: float
    y0: float
    w: float
    h: float

    def x(self, axis: Axis, value: float) -> float:
        return self.x0 + self.w * axis.frac(value)

    def y(self, axis: Axis, value: float) -> float:
        return self.y0 + self.h - self.h * axis.frac(value)


def _legend(entries: Sequence[tuple[str, str, str]], top: float) -> tuple[list[str], float]:
    """Legend rows below the plot: (label, color, detail); returns parts and the height used."""
    parts = [f'<g class="legend" transform="translate({ML},{top:.0f})">']
    wide = any(detail for _, _, detail in entries)
    per_row = 1 if wide else 3
    col_w = (W - ML - MR) / per_row
    for i, (label, color, detail) in enumerate(entries):
        x = (i % per_row) * col_w
        y = (i // per_row) * 19
        text = escape(label[:40]) + (f'<tspan fill="#555"> {escape(detail)}</tspan>' if detail else "")
        parts.append(
            f'<rect x="{x:.0f}" y="{y}" width="12" height="12" rx="2" fill="{color}"/>'
            f'<text x="{x + 18:.0f}" y="{y + 10.5}" font-size="12">{text}</text>'
        )
    parts.append("</g>")
    rows = math.ceil(len(entries) / per_row) if entries else 0
    return parts, rows * 19 + (8 if rows else 0)


def _axes(box: _Box, xa: Axis, ya: Axis) -> list[str]:
    parts = [f'<g class="axis x" data-kind="{xa.kind}" data-log="{int(xa.log)}">']
    for t, label in zip(xa.ticks, xa.labels, strict=True):
        px = box.x(xa, t)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{box.y0}" y2="{box.y0 + box.h}" stroke="#eee"/>'
            f'<text class="tick" x="{px:.1f}" y="{box.y0 + box.h + 16}" text-anchor="middle" '
            f'font-size="11.5">{escape(label)}</text>'
        )
    parts.append(
        f'<text class="axis-title" x="{box.x0 + box.w / 2:.0f}" y="{box.y0 + box.h + 36}" '
        f'text-anchor="middle" font-size="12.5">{escape(xa.title)}{" (log scale)" if xa.log else ""}'
        "</text></g>"
    )
    parts.append(f'<g class="axis y" data-kind="{ya.kind}" data-log="{int(ya.log)}">')
    for t, label in zip(ya.ticks, ya.labels, strict=True):
        py = box.y(ya, t)
        parts.append(
            f'<line x1="{box.x0}" x2="{box.x0 + box.w}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>'
            f'<text class="tick" x="{box.x0 - 6}" y="{py + 4:.1f}" text-anchor="end" '
            f'font-size="11.5">{escape(label)}</text>'
        )
    cy = box.y0 + box.h / 2
    parts.append(
        f'<text class="axis-title" x="16" y="{cy:.0f}" text-anchor="middle" font-size="12.5" '
        f'transform="rotate(-90 16 {cy:.0f})">{escape(ya.title)}{" (log)" if ya.log else ""}</text></g>'
    )
    parts.append(
        f'<rect class="frame" x="{box.x0}" y="{box.y0}" width="{box.w}" height="{box.h}" '
        f'fill="none" stroke="#999"/>'
    )
    return parts


def _svg(title: str, height: float, body: Sequence[str]) -> str:
    return (
        f'<svg class="plot" viewBox="0 0 {W} {height:.0f}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMinYMin meet" style="{FONT}">'
        f'<text class="title" x="{W / 2}" y="22" text-anchor="middle" font-size="15" '
        f'font-weight="600">{escape(title)}</text>' + "".join(body) + "</svg>"
    )


def _chart(
    title: str,
    xa: Axis,
    ya: Axis,
    draw: Callable[[_Box], list[str]],
    legend: Sequence[tuple[str, str, str]],
) -> str:
    box = _Box(ML, MT, W - ML - MR, PH)
    body = _axes(box, xa, ya)
    body.append(f'<g class="data">{"".join(draw(box))}</g>')
    parts, used = _legend(legend, MT + PH + AXIS_GAP + 6)
    return _svg(title, MT + PH + AXIS_GAP + 6 + used + 4, [*body, *parts])


# -- charts ---------------------------------------------------------------------------------
_MARKS = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))


def cdf_chart(title: str, series: Sequence[tuple[str, Sequence[float]]], xlabel: str = "latency") -> str:
    """Cumulative distribution of each series (x: seconds, y: share of requests), with the
    p50 / p95 / p99 of each marked on its line, named in the legend, and guide lines."""
    data = [(name, sorted(v for v in values if math.isfinite(v))) for name, values in series]
    data = [(name, vs) for name, vs in data if vs]
    if not data:
        return ""
    xa = Axis.time([v for _, vs in data for v in vs], xlabel)
    ya = Axis.percent("requests at or below")
    legend = []
    for k, (name, vs) in enumerate(data):
        detail = " · ".join(f"{label} {seconds(percentile(vs, q))}" for label, q in _MARKS)
        legend.append((name, PALETTE[k % len(PALETTE)], detail))

    def draw(box: _Box) -> list[str]:
        out = []
        for label, q in _MARKS:
            py = box.y(ya, q)
            out.append(
                f'<line class="mark" x1="{box.x0}" x2="{box.x0 + box.w}" y1="{py:.1f}" y2="{py:.1f}" '
                f'stroke="#888" stroke-dasharray="4 3"/>'
                f'<text class="mark" x="{box.x0 + box.w + 5}" y="{py + 4:.1f}" font-size="11">{label}</text>'
            )
        for k, (name, vs) in enumerate(data):
            color = PALETTE[k % len(PALETTE)]
            n = len(vs)
            step = max(1, n // 600)  # at most ~600 vertices per line
            pts = [(box.x(xa, vs[0]), box.y(ya, 0.0))]
            for i in range(0, n, step):
                pts.append((box.x(xa, vs[i]), box.y(ya, 100.0 * (i + 1) / n)))
            pts.append((box.x(xa, vs[-1]), box.y(ya, 100.0)))
            out.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                + '"/>'
            )
            for label, q in _MARKS:
                v = percentile(vs, q)
                out.append(
                    f'<circle cx="{box.x(xa, v):.1f}" cy="{box.y(ya, q):.1f}" r="3.5" fill="{color}" '
                    f'stroke="#fff"><title>{escape(name)} {label} {seconds(v)}</title></circle>'
                )
        return out

    return _chart(title, xa, ya, draw, legend)


def scatter(
    title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], xlabel: str, ylabel: str
) -> str:
    """Points (x: seconds since the start, y: latency in seconds) of several series."""
    data = [(name, [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]) for name, pts in series]
    data = [(name, pts) for name, pts in data if pts]
    if not data:
        return ""
    xa = Axis.time([x for _, pts in data for x, _ in pts], xlabel, log=False, zero=True)
    ya = Axis.time([y for _, pts in data for _, y in pts], ylabel, zero=True)
    legend = [(name, PALETTE[k % len(PALETTE)], "") for k, (name, _) in enumerate(data)]

    def draw(box: _Box) -> list[str]:
        out: list[str] = []
        for k, (_, pts) in enumerate(data):
            color = PALETTE[k % len(PALETTE)]
            step = max(1, len(pts) // 3000)
            out.extend(
                f'<circle cx="{box.x(xa, x):.1f}" cy="{box.y(ya, y):.1f}" r="1.8" fill="{color}" '
                f'fill-opacity="0.7"/>'
                for x, y in pts[::step]
            )
        return out

    return _chart(title, xa, ya, draw, legend)


def line_chart(
    title: str, points: Sequence[tuple[float, float, str, float]], xlabel: str, ylabel: str
) -> str:
    """Throughput (x, req/s) against a latency (y, seconds), one point per scenario
    ``(x, y, label, level)``; the line joins the levels of offered load in order, one point
    per level, so two scenarios at the same level are two points, never a segment."""
    if not points:
        return ""
    xa = Axis.number([p[0] for p in points], xlabel)
    ya = Axis.time([p[1] for p in points], ylabel, zero=True, log=False)
    by_level: dict[float, tuple[float, float, str, float]] = {}
    for p in sorted(points, key=lambda p: (p[3], p[2])):
        by_level.setdefault(p[3], p)
    path = [by_level[level] for level in sorted(by_level)]

    def draw(box: _Box) -> list[str]:
        out = []
        if len(path) >= 2:
            out.append(
                f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="2" points="'
                + " ".join(f"{box.x(xa, x):.1f},{box.y(ya, y):.1f}" for x, y, _, _ in path)
                + '"/>'
            )
        for x, y, label, _ in points:
            px, py = box.x(xa, x), box.y(ya, y)
            right = px > box.x0 + box.w * 0.7
            tx, anchor = (px - 7, "end") if right else (px + 7, "start")
            ty = py + 15 if py < box.y0 + 16 else py - 7
            out.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{PALETTE[1]}" stroke="#fff">'
                f"<title>{escape(label)}: {x:.1f} req/s, {seconds(y)}</title></circle>"
                f'<text x="{tx:.1f}" y="{ty:.1f}" text-anchor="{anchor}" font-size="11">'
                f"{escape(label[:24])}</text>"
            )
        return out

    return _chart(title, xa, ya, draw, [])


def stacked_bars(title: str, rows: Sequence[tuple[str, Sequence[tuple[str, float]]]], xlabel: str) -> str:
    """Horizontal stacked bars, one row per label, segments ``(name, seconds)``; the x axis
    in time units, the segment names in a legend below."""
    if not rows:
        return ""
    names: list[str] = []
    for _, segs in rows:
        for n, _v in segs:
            if n not in names:
                names.append(n)
    total = max(sum(v for _, v in segs) for _, segs in rows)
    xa = Axis.time([0.0, total or 1e-3], xlabel, log=False, zero=True)
    left = ML + 40
    plot_w = W - left - MR
    row_h = 26
    ph = row_h * len(rows) + 10
    box = _Box(left, MT, plot_w, ph)
    body = [f'<g class="axis x" data-kind="{xa.kind}" data-log="0">']
    for t, label in zip(xa.ticks, xa.labels, strict=True):
        px = box.x(xa, t)
        body.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{MT}" y2="{MT + ph}" stroke="#eee"/>'
            f'<text class="tick" x="{px:.1f}" y="{MT + ph + 16}" text-anchor="middle" '
            f'font-size="11.5">{escape(label)}</text>'
        )
    body.append(
        f'<text class="axis-title" x="{left + plot_w / 2:.0f}" y="{MT + ph + 36}" text-anchor="middle" '
        f'font-size="12.5">{escape(xlabel)}</text></g>'
    )
    body.append('<g class="data">')
    for r, (label, segs) in enumerate(rows):
        y = MT + 6 + row_h * r
        body.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="11.5">'
            f"{escape(label[:22])}</text>"
        )
        x = float(left)
        for n, v in segs:
            w = plot_w * xa.frac(v) if v > 0 else 0.0
            color = PALETTE[names.index(n) % len(PALETTE)]
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="18" fill="{color}">'
                f"<title>{escape(label)} {escape(n)}: {seconds(v)}</title></rect>"
            )
            x += w
    body.append("</g>")
    body.append(
        f'<rect class="frame" x="{left}" y="{MT}" width="{plot_w}" height="{ph}" fill="none" stroke="#999"/>'
    )
    legend, used = _legend([(n, PALETTE[i % len(PALETTE)], "") for i, n in enumerate(names)], MT + ph + 50)
    return _svg(title, MT + ph + 50 + used + 4, [*body, *legend])
