"""``iterate-report.md``: criteria and scenario tables sized for a CI job summary."""

from __future__ import annotations

from pathlib import Path

from pytest_iterate._files import write_atomic
from pytest_iterate.harness.fmt import DEFINITIONS, number, seconds
from pytest_iterate.harness.summary import Report

__all__ = ["FILENAME", "render", "write"]

FILENAME = "iterate-report.md"


def _cell(text: object, limit: int = 240) -> str:
    """A note as one table cell: no newlines or pipes, long ones shortened."""
    if not text:
        return ""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _criteria(report: Report) -> list[str]:
    if not report.criteria:
        return []
    passed = sum(1 for c in report.criteria if c.passed)
    lines = [
        f"## Criteria ({passed}/{len(report.criteria)} passed)",
        "",
        "| | id | observed | threshold | unit | note |",
        "|---|---|---:|---:|---|---|",
    ]
    marks = {"PASS": "✅", "FAIL": "❌", "SKIP": "⏭️"}
    for c in report.criteria:
        lines.append(
            f"| {marks[c.verdict]} | `{c.id}` | {number(c.observed, 3)} | "
            f"{number(c.threshold, 3)} | {c.unit} | {_cell(c.note)} |"
        )
    return [*lines, ""]


def _scenarios(report: Report) -> list[str]:
    if not report.scenarios:
        return []
    lines = [
        "## Scenarios",
        "",
        "| scenario | requests | errors | req/s | mean | p50 | p95 | p99 | max | TTFT p95 | lag p99 "
        "| cache hit | in flight max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.scenarios:
        lat = s.latency_s
        lines.append(
            f"| {s.name} | {s.requests} | {s.errors} | {number(s.throughput_rps, 1)} | {seconds(lat.mean)} | "
            f"{seconds(lat.p50)} | {seconds(lat.p95)} | {seconds(lat.p99)} | {seconds(lat.max)} | "
            f"{seconds(s.ttft_s.p95)} | {seconds(s.scheduling_lag_s.p99)} | {s.cache.hit_rate * 100:.0f} % | "
            f"{number(s.max_inflight)} |"
        )
    lines.append("")
    stage_rows = [(s.name, name, d) for s in report.scenarios for name, d in s.stages.items()]
    if stage_rows:
        lines += ["## Stages", "", "| scenario | stage | mean | p95 | max |", "|---|---|---:|---:|---:|"]
        lines += [
            f"| {n} | {st} | {seconds(d.mean)} | {seconds(d.p95)} | {seconds(d.max)} |"
            for n, st, d in stage_rows
        ]
        lines.append("")
    if any(s.workers for s in report.scenarios):
        lines += _workers(report)
    kinds = [(s.name, k, v) for s in report.scenarios for k, v in s.errors_by_kind.items()]
    if kinds:
        lines += ["## Errors by kind", "", "| scenario | kind | count |", "|---|---|---:|"]
        lines += [f"| {n} | {k} | {v} |" for n, k, v in kinds]
        lines.append("")
    return lines


def _workers(report: Report) -> list[str]:
    """Each worker process's share of a scenario and its scheduling lag, then all of them."""
    lines = [
        "## Workers",
        "",
        "Statistics above are over every worker's samples, merged; the lag of each worker is its own.",
        "",
        "| scenario | worker | requests | errors | lag p50 | lag p99 | lag max | in flight max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report.scenarios:
        if not s.workers:
            continue
        for w in s.workers:
            lag = w.scheduling_lag_s
            name = f"{w.worker}" + (f" ({_cell(w.label, 60)})" if w.label else "")
            lines.append(
                f"| {s.name} | {name} | {w.requests} | {w.errors} | {seconds(lag.p50)} | "
                f"{seconds(lag.p99)} | {seconds(lag.max)} | {number(w.max_inflight)} |"
            )
        lag = s.scheduling_lag_s
        lines.append(
            f"| {s.name} | all {len(s.workers)} | {s.requests} | {s.errors} | {seconds(lag.p50)} | "
            f"{seconds(lag.p99)} | {seconds(lag.max)} | {number(s.max_inflight)} |"
        )
    return [*lines, ""]


def render(report: Report) -> str:
    lines = ["# pytest-iterate report" + ("" if report.complete else " (INCOMPLETE)"), ""]
    if not report.complete:
        lines += [
            f"> **Incomplete run**: {report.incomplete_reason or 'no reason recorded'}. "
            "It is not compared with a baseline and is never saved as one.",
            "",
        ]
    meta = ", ".join(f"{k}: {v}" for k, v in report.run.items() if v is not None)
    if meta:
        lines += [meta, ""]
    lines += _criteria(report) + _scenarios(report)
    lines.append(f"Definitions (latency counts from the scheduled send time): {DEFINITIONS}")
    return "\n".join(lines) + "\n"


def write(report: Report, folder: Path) -> Path:
    return write_atomic(Path(folder) / FILENAME, render(report))
