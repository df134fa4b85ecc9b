"""``benchmark.json`` in pytest-benchmark's schema, so its tools read our runs.

Each scenario becomes one benchmark (group ``pytest-iterate``); its ``stats`` are
computed from the raw latencies (``samples_s``) when the report holds them, else
from the scenario's latency summary. ``pytest-benchmark compare reports/benchmark.json``
then shows min/max/mean/median/IQR/ops like any pytest-benchmark run.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_iterate._files import write_atomic
from pytest_iterate.harness.summary import Report, ScenarioSummary, percentile

__all__ = ["FILENAME", "PYTEST_BENCHMARK_VERSION", "benchmark_stats", "render", "write"]

FILENAME = "benchmark.json"
PYTEST_BENCHMARK_VERSION = "5.1.0"  # the schema version we emit (unchanged through 5.x)


def _machine_info() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "node": uname.node,
        "processor": uname.processor or uname.machine,
        "machine": uname.machine,
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": uname.release,
        "system": uname.system,
        "cpu": {"arch": uname.machine, "count": _cpu_count()},
    }


def _cpu_count() -> int:
    return os.cpu_count() or 1


def _commit_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": None,
        "time": None,
        "author_time": None,
        "dirty": False,
        "project": "pytest-iterate",
        "branch": None,
    }
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%H%n%cI%n%aI"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.split("\n")
        info["id"], info["time"], info["author_time"] = out[0], out[1], out[2]
        info["branch"] = (
            subprocess.run(
                ["git", "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        info["dirty"] = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return info


def benchmark_stats(values: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` block from raw per-round times (seconds)."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("benchmark_stats needs at least one value")
    mean = math.fsum(xs) / n
    stddev = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    q1, q3 = percentile(xs, 25, presorted=True), percentile(xs, 75, presorted=True)
    iqr = q3 - q1
    lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    ld15iqr = next(x for x in xs if x >= lo_fence)
    hd15iqr = next(x for x in reversed(xs) if x <= hi_fence)
    iqr_outliers = sum(1 for x in xs if x < lo_fence or x > hi_fence)
    stddev_outliers = sum(1 for x in xs if x < mean - stddev or x > mean + stddev)
    total = math.fsum(xs)
    return {
        "min": xs[0],
        "max": xs[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": n,
        "median": percentile(xs, 50, presorted=True),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_outliers,
        "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}",
        "ld15iqr": ld15iqr,
        "hd15iqr": hd15iqr,
        "ops": 1.0 / mean if mean > 0 else 0.0,
        "total": total,
        "iterations": 1,
    }


def _stats_from_summary(s: ScenarioSummary) -> dict[str, Any] | None:
    lat = s.latency_s
    if lat.mean is None:
        return None
    n = lat.count or s.requests or 1
    mean = lat.mean
    median = lat.p50 if lat.p50 is not None else mean
    q1 = lat.q1 if lat.q1 is not None else median
    q3 = lat.q3 if lat.q3 is not None else median
    mn = lat.min if lat.min is not None else q1
    mx = lat.max if lat.max is not None else q3
    return {
        "min": mn,
        "max": mx,
        "mean": mean,
        "stddev": lat.stddev or 0.0,
        "rounds": n,
        "median": median,
        "iqr": q3 - q1,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": 0,
        "stddev_outliers": 0,
        "outliers": "0;0",
        "ld15iqr": mn,
        "hd15iqr": mx,
        "ops": 1.0 / mean if mean > 0 else 0.0,
        "total": mean * n,
        "iterations": 1,
    }


def render(report: Report, *, include_data: bool = False) -> dict[str, Any]:
    """The pytest-benchmark document for ``report``; ``include_data`` adds raw ``data``."""
    benchmarks = []
    for s in report.scenarios:
        raw = s.samples_s
        stats = benchmark_stats(raw) if raw else _stats_from_summary(s)
        if stats is None:
            continue
        if include_data and raw:
            stats["data"] = list(raw)
        params = {"load": s.load, "concurrency": s.concurrency, "rate_rps": s.info.get("rate_rps")}
        benchmarks.append(
            {
                "group": "pytest-iterate",
                "name": s.name,
                "fullname": f"pytest-iterate::{s.name}",
                "params": {k: v for k, v in params.items() if v is not None} or None,
                "param": None,
                "extra_info": {
                    "requests": s.requests,
                    "errors": s.errors,
                    "throughput_rps": s.throughput_rps,
                },
                "options": {
                    "disable_gc": False,
                    "timer": "perf_counter",
                    "min_rounds": 1,
                    "max_time": 0,
                    "min_time": 0,
                    "warmup": False,
                },
                "stats": stats,
            }
        )
    return {
        "machine_info": _machine_info(),
        "commit_info": _commit_info(),
        "benchmarks": benchmarks,
        "datetime": _dt.datetime.now(_dt.UTC).isoformat(),
        "version": PYTEST_BENCHMARK_VERSION,
    }


def write(report: Report, folder: Path) -> Path:
    return write_atomic(Path(folder) / FILENAME, json.dumps(render(report), indent=2) + "\n")
