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
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_iterate.harness.stats import percentile

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
    import os

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


def _first(d: Mapping[str, Any], keys: tuple[str, ...], default: float) -> float:
    for key in keys:
        if d.get(key) is not None:
            return float(d[key])
    return default


def _stats_from_summary(s: Mapping[str, Any]) -> dict[str, Any] | None:
    lat = s.get("latency_s") or {}
    if not isinstance(lat, Mapping) or lat.get("mean") is None:
        return None
    n = int(lat.get("count") or s.get("requests") or 1)
    mean = float(lat["mean"])
    median = _first(lat, ("p50",), mean)
    q1 = _first(lat, ("q1", "p50"), mean)
    q3 = _first(lat, ("q3", "p50"), mean)
    mn = _first(lat, ("min",), q1)
    mx = _first(lat, ("max",), q3)
    return {
        "min": mn,
        "max": mx,
        "mean": mean,
        "stddev": float(lat.get("stddev") or 0.0),
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


def render(report: Mapping[str, Any], *, include_data: bool = False) -> dict[str, Any]:
    """The pytest-benchmark document for ``report``; ``include_data`` adds raw ``data``."""
    benchmarks = []
    for s in report.get("scenarios", []):
        name = str(s.get("name", "scenario"))
        raw = s.get("samples_s") or []
        stats = benchmark_stats(raw) if raw else _stats_from_summary(s)
        if stats is None:
            continue
        if include_data and raw:
            stats["data"] = list(raw)
        params = {k: s[k] for k in ("load", "concurrency", "rate_rps") if k in s}
        benchmarks.append(
            {
                "group": "pytest-iterate",
                "name": name,
                "fullname": f"pytest-iterate::{name}",
                "params": params or None,
                "param": None,
                "extra_info": {k: s.get(k) for k in ("requests", "errors", "throughput_rps") if k in s},
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


def write(report: Mapping[str, Any], folder: Path) -> Path:
    path = Path(folder) / FILENAME
    path.write_text(json.dumps(render(report), indent=2) + "\n", encoding="utf-8")
    return path
