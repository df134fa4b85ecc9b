"""The open-loop ceiling search the harness benchmarks share (bench_harness, bench_workers).

A step passes when its p99 scheduling lag (actual send - scheduled send) is under 10 ms,
with no errors and at least 95 % of the rate delivered. The rate doubles from ``start``
until a step fails (best of ``tries`` runs per rate: other processes on a shared machine
add lag spikes that are not the harness's ceiling), then bisects ``refine`` times.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

LAG_P99_LIMIT_S = 0.010
LIMIT = f"lag p99 < {LAG_P99_LIMIT_S * 1000:.0f} ms"

Trial = Callable[[float, float], Awaitable[dict[str, float]]]


def ok(r: dict[str, float]) -> bool:
    return r["lag_p99"] < LAG_P99_LIMIT_S and r["errors"] == 0 and r["achieved"] >= 0.95 * r["rps"]


def step_result(rps: float, summary: Any) -> dict[str, float]:
    """What a step measured, from its :class:`~pytest_iterate.harness.summary.ScenarioSummary`."""
    return {
        "rps": rps,
        "achieved": summary.throughput_rps or 0.0,
        "lag_p99": summary.scheduling_lag_s.p99 or 0.0,
        "lat_p50": summary.latency_s.p50 or 0.0,
        "lat_p99": summary.latency_s.p99 or 0.0,
        "errors": summary.errors,
    }


async def _best_of(trial: Trial, rps: float, args: argparse.Namespace, pause_s: float) -> dict[str, float]:
    best: dict[str, float] | None = None
    for _ in range(args.tries):
        r = await trial(rps, args.step_seconds)
        if best is None or r["lag_p99"] < best["lag_p99"]:
            best = r
        if ok(r):
            break
        await asyncio.sleep(pause_s)
    assert best is not None
    return best


async def find_ceiling(
    trial: Trial, args: argparse.Namespace, show: Callable[[dict[str, float]], None], *, pause_s: float = 0.0
) -> tuple[float, dict[float, dict[str, float]]]:
    """The highest passing rate, and every step's best result by rate; ``show`` prints a step.
    ``args`` holds ``start``, ``max_rate``, ``refine``, ``tries`` and ``step_seconds``."""
    await trial(200, 1.0)  # connections opened, code paths warm
    steps: dict[float, dict[str, float]] = {}

    async def step(rps: float) -> bool:
        r = steps[rps] = await _best_of(trial, rps, args, pause_s)
        show(r)
        await asyncio.sleep(pause_s)
        return ok(r)

    good, bad = 0.0, None
    rps = args.start
    while rps <= args.max_rate:
        if not await step(rps):
            bad = rps
            break
        good, rps = rps, rps * 2
    for _ in range(args.refine if bad is not None and good else 0):
        assert bad is not None
        mid = (good + bad) / 2
        good, bad = (mid, bad) if await step(mid) else (good, mid)
    return good, steps


def add_search_options(parser: argparse.ArgumentParser, *, start: float, max_rate: float) -> None:
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--start", type=float, default=start)
    parser.add_argument("--max-rate", type=float, default=max_rate)
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--tries", type=int, default=2, help="runs per rate; the best counts")
