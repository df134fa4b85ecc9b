"""Tiny inline-SVG chart primitives for the HTML report (no external assets)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart", "histogram", "line_chart", "scatter", "stacked_bars"]

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
W, H = 640, 300
ML, MR, MT, MB = 60, 20, 30, 45


def _nice(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v * 1000:.1f}m"


def _frame(
    title: str,
    xlabel: str,
    ylabel: str,
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    body: list[str],
    legend: Sequence[tuple[str, str]] = (),
) -> str:
    pw, ph = W - ML - MR, H - MT - MB
    parts = [
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{escape(title)}" class="plot">',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for i in range(5):
        fy = y0 + (y1 - y0) * i / 4
        py = MT + ph - ph * i / 4
        parts.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{ML - 4}" y="{py + 4:.1f}" text-anchor="end" font-size="10">{_nice(fy)}</text>'
        )
        fx = x0 + (x1 - x0) * i / 4
        px = ML + pw * i / 4
        parts.append(
            f'<text x="{px:.1f}" y="{MT + ph + 14}" text-anchor="middle" font-size="10">{_nice(fx)}</text>'
        )
    parts.append(
        f'<text x="{ML + pw / 2}" y="{H - 8}" text-anchor="middle" font-size="11">{escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{MT + ph / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 12 {MT + ph / 2})">{escape(ylabel)}</text>'
    )
    parts += body
    for i, (label, color) in enumerate(legend):
        ly = MT + 12 + 14 * i
        parts.append(
            f'<rect x="{ML + pw - 150}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{ML + pw - 136}" y="{ly}" font-size="10">{escape(label[:24])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _scale(v: float, lo: float, hi: float, out_lo: float, out_hi: float) -> float:
    if hi <= lo:
        return (out_lo + out_hi) / 2
    return out_lo + (v - lo) * (out_hi - out_lo) / (hi - lo)


def histogram(
    title: str, series: Sequence[tuple[str, Sequence[float]]], bins: int = 40, xlabel: str = "latency (s)"
) -> str:
    """Overlaid histograms (counts per bin) of several value series."""
    allv = [v for _, vs in series for v in vs if math.isfinite(v)]
    if not allv:
        return ""
    lo, hi = min(allv), max(allv)
    if hi <= lo:
        hi = lo + 1e-3
    width = (hi - lo) / bins
    counts = []
    for _, vs in series:
        c = [0] * bins
        for v in vs:
            c[min(bins - 1, int((v - lo) / width))] += 1
        counts.append(c)
    ymax = max(max(c) for c in counts) or 1
    pw, ph = W - ML - MR, H - MT - MB
    body = []
    for k, c in enumerate(counts):
        color = PALETTE[k % len(PALETTE)]
        for i, n in enumerate(c):
            if n == 0:
                continue
            x = ML + pw * i / bins
            h = ph * n / ymax
            body.append(
                f'<rect x="{x:.1f}" y="{MT + ph - h:.1f}" width="{pw / bins:.1f}" height="{h:.1f}" '
                f'fill="{color}" fill-opacity="0.55"/>'
            )
    legend = [(name, PALETTE[k % len(PALETTE)]) for k, (name, _) in enumerate(series)]
    return _frame(title, xlabel, "requests", lo, hi, 0, ymax, body, legend)


def scatter(
    title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], xlabel: str, ylabel: str
) -> str:
    pts = [p for _, ps in series for p in ps]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) or 1.0
    pw, ph = W - ML - MR, H - MT - MB
    body = []
    for k, (_, ps) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        for x, y in ps:
            body.append(
                f'<circle cx="{_scale(x, x0, x1, ML, ML + pw):.1f}" '
                f'cy="{_scale(y, 0, y1, MT + ph, MT):.1f}" r="1.8" fill="{color}"/>'
            )
    legend = [(name, PALETTE[k % len(PALETTE)]) for k, (name, _) in enumerate(series)]
    return _frame(title, xlabel, ylabel, x0, x1, 0, y1, body, legend)


def line_chart(title: str, points: Sequence[tuple[float, float, str]], xlabel: str, ylabel: str) -> str:
    """One line through ``(x, y, label)`` points, sorted by x, labelled."""
    if not points:
        return ""
    pts = sorted(points)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) or 1.0
    pw, ph = W - ML - MR, H - MT - MB
    xy = [(_scale(x, x0, x1, ML, ML + pw), _scale(y, 0, y1, MT + ph, MT), lab) for x, y, lab in pts]
    body = [
        f'<polyline fill="none" stroke="{PALETTE[0]}" stroke-width="2" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in xy)
        + '"/>'
    ]
    for x, y, lab in xy:
        right_half = x > ML + pw / 2  # label on the inner side, so the plot's edge never cuts it
        tx, anchor = (x - 5, "end") if right_half else (x + 5, "start")
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{PALETTE[1]}"/>'
            f'<text x="{tx:.1f}" y="{y + 12 if y < MT + 12 else y - 5:.1f}" text-anchor="{anchor}" '
            f'font-size="9">{escape(lab[:20])}</text>'
        )
    return _frame(title, xlabel, ylabel, x0, x1, 0, y1, body)


def stacked_bars(title: str, rows: Sequence[tuple[str, Sequence[tuple[str, float]]]], xlabel: str) -> str:
    """Horizontal stacked bars: one row per label, segments ``(name, value)``."""
    if not rows:
        return ""
    names: list[str] = []
    for _, segs in rows:
        for n, _v in segs:
            if n not in names:
                names.append(n)
    xmax = max(sum(v for _, v in segs) for _, segs in rows) or 1.0
    height = max(H, MT + MB + 28 * len(rows))
    pw = W - ML - MR - 60
    body = [
        f'<svg viewBox="0 0 {W} {height}" width="{W}" '
        f'height="{height}" role="img" aria-label="{escape(title)}" class="plot">',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    left = ML + 60
    for r, (label, segs) in enumerate(rows):
        y = MT + 10 + 28 * r
        body.append(
            f'<text x="{left - 4}" y="{y + 13}" text-anchor="end" font-size="10">{escape(label[:18])}</text>'
        )
        x = float(left)
        for n, v in segs:
            w = pw * v / xmax
            color = PALETTE[names.index(n) % len(PALETTE)]
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="18" fill="{color}">'
                f"<title>{escape(n)}: {v * 1000:.2f} ms</title></rect>"
            )
            x += w
    ly = MT + 10 + 28 * len(rows) + 10
    for i, n in enumerate(names):
        body.append(
            f'<rect x="{left + 110 * (i % 5)}" y="{ly + 16 * (i // 5)}" width="10" height="10" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{left + 14 + 110 * (i % 5)}" '
            f'y="{ly + 9 + 16 * (i // 5)}" font-size="10">{escape(n)}</text>'
        )
    body.append(
        f'<text x="{W / 2}" y="{height - 6}" text-anchor="middle" font-size="11">{escape(xlabel)} '
        f"(full bar = {xmax * 1000:.2f} ms)</text></svg>"
    )
    return "".join(body)


def bar_chart(title: str, bars: Sequence[tuple[str, float]], ylabel: str) -> str:
    return stacked_bars(title, [(label, [(label, v)]) for label, v in bars], ylabel)
