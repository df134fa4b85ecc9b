"""``iterate-report.md``: criteria and scenario tables sized for a CI job summary."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_iterate.harness.reports._fmt import fmt_num, fmt_s

__all__ = ["FILENAME", "render", "write"]

FILENAME = "iterate-report.md"


def _lat(s: Mapping[str, Any], key: str, field: str) -> str:
    d = s.get(key) or {}
    return fmt_s(d.get(field)) if isinstance(d, Mapping) else "-"


def _cell(text: Any, limit: int = 240) -> str:
    """A note as one table cell: no newlines or pipes, long ones shortened."""
    if not text:
        return ""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def render(report: Mapping[str, Any]) -> str:
    run = report.get("run", {})
    lines = ["# pytest-iterate report", ""]
    meta = ", ".join(f"{k}: {v}" for k, v in run.items() if isinstance(v, (str, int, float)))
    if meta:
        lines += [meta, ""]
    criteria = report.get("criteria", [])
    if criteria:
        passed = sum(1 for c in criteria if c.get("passed"))
        lines += [
            f"## Criteria ({passed}/{len(criteria)} passed)",
            "",
            "| | id | observed | threshold | unit | note |",
            "|---|---|---:|---:|---|---|",
        ]
        for c in criteria:
            mark = "✅" if c.get("passed") else ("❌" if c.get("passed") is False else "⏭️")
            lines.append(
                f"| {mark} | `{c['id']}` | {fmt_num(c.get('observed'), 3)} | "
                f"{fmt_num(c.get('threshold'), 3)} | {c.get('unit', '')} | {_cell(c.get('note'))} |"
            )
        lines.append("")
    scenarios = report.get("scenarios", [])
    if scenarios:
        lines += [
            "## Scenarios",
            "",
            "| scenario | requests | errors | req/s | mean | p50 | p95 | p99 | max | TTFT p95 | lag p99 "
            "| cache hit |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in scenarios:
            cache = s.get("cache") or {}
            hit = cache.get("hit_rate")
            lines.append(
                f"| {s.get('name')} | {s.get('requests', '-')} | {s.get('errors', '-')} | "
                f"{fmt_num(s.get('throughput_rps'), 1)} | {_lat(s, 'latency_s', 'mean')} | "
                f"{_lat(s, 'latency_s', 'p50')} | {_lat(s, 'latency_s', 'p95')} | "
                f"{_lat(s, 'latency_s', 'p99')} | {_lat(s, 'latency_s', 'max')} | "
                f"{_lat(s, 'ttft_s', 'p95')} | {_lat(s, 'scheduling_lag_s', 'p99')} | "
                f"{'-' if hit is None else f'{hit * 100:.0f} %'} |"
            )
        lines.append("")
        stage_rows = [
            (s.get("name"), st, d)
            for s in scenarios
            for st, d in (s.get("stages") or {}).items()
            if isinstance(d, Mapping)
        ]
        if stage_rows:
            lines += ["## Stages", "", "| scenario | stage | mean | p95 | max |", "|---|---|---:|---:|---:|"]
            for name, st, d in stage_rows:
                lines.append(
                    f"| {name} | {st} | {fmt_s(d.get('mean'))} | {fmt_s(d.get('p95'))} | "
                    f"{fmt_s(d.get('max'))} |"
                )
            lines.append("")
        kinds = [(s.get("name"), k, v) for s in scenarios for k, v in (s.get("errors_by_kind") or {}).items()]
        if kinds:
            lines += ["## Errors by kind", "", "| scenario | kind | count |", "|---|---|---:|"]
            lines += [f"| {n} | {k} | {v} |" for n, k, v in kinds]
            lines.append("")
    lines.append("Definitions: see harness/DEFINITIONS.md (latency counts from the scheduled send time).")
    return "\n".join(lines) + "\n"


def write(report: Mapping[str, Any], folder: Path) -> Path:
    path = Path(folder) / FILENAME
    path.write_text(render(report), encoding="utf-8")
    return path
