"""Rate limits: the pipeline against the mock's request and token limits, paced at the refill rate.

    .venv/bin/python benchmarks/bench_ratelimit.py            # both runs below
    .venv/bin/python benchmarks/bench_ratelimit.py --before   # also the throttle before pacing (~60 s)

1. The issue's run: 34 requests at concurrency 5 through the pipeline (cache off) to the
   mock's fast profile limited to 30 requests a minute (``iterate-bench serve-mock
   --profile fast --rpm 30``). 30 fit the bucket, the other 4 need 2 s each: about 8 s
   is the floor. ``--before`` runs it again with the throttle that waited out the whole
   reset when a budget reached 0 (60 s).
2. Steady state: 300 requests at concurrency 16 against 600 requests/min and a token
   limit sized to 600 average requests/min, 2 s of each left at the start: 429 answers,
   failures, and the share of the binding limit's allowed rate achieved.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from typing import Any

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.ratelimit import RateLimiter
from pytest_iterate.doubles.mock.server import MockServer
from pytest_iterate.harness.loads import ClosedLoop
from pytest_iterate.harness.runner import run_load
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.runner import Pipeline
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path
from pytest_iterate.tokens.counter import TokenCounter


async def drive(limiter: RateLimiter, requests: int, concurrency: int) -> dict[str, Any]:
    items = list({d.id: d for d in load_workload(standard_workload_path())}.values())
    server = MockServer(MockLLM("fast", rate_limit=limiter)).start_in_thread()
    try:
        config = IterateConfig.load(
            {
                "base_url": server.base_url,
                "cache_enabled": False,
                "max_concurrent_requests": concurrency,
                "cache_dir": tempfile.mkdtemp(),
            },
            pyproject=None,
        )
        async with Pipeline.from_config(config) as pipeline:
            started = time.perf_counter()
            run = await run_load(pipeline.run, items, ClosedLoop(concurrency), requests=requests)
            wall = time.perf_counter() - started
    finally:
        server.stop()
    summary = run.summary("run")
    stats = server.core.stats
    return {
        "wall_s": wall,
        "p95_s": summary.latency_s.p95 or 0.0,
        "errors": summary.errors,
        "answered": stats.statuses.get(200, 0),
        "429": stats.statuses.get(429, 0),
        "run_wall_s": summary.wall_s,
    }


def before_pacing() -> None:
    """Put back the throttle's old rule: a budget at 0 waits out its whole reset."""
    from pytest_iterate.client.pacing import RatePacer, parse_reset_duration

    def old(self: RatePacer, headers: Any, **_: Any) -> None:
        self.engaged = True
        for budget in (self.requests, self.tokens):
            remaining = headers.get(f"x-ratelimit-remaining-{budget.name}")
            reset = parse_reset_duration(headers.get(f"x-ratelimit-reset-{budget.name}"))
            if remaining is not None and float(remaining) <= budget.floor and reset:
                budget.not_before = max(budget.not_before, time.monotonic() + reset)

    RatePacer.observe = old  # type: ignore[method-assign]


def mean_charge(requests: int) -> float:
    """The mean tokens the mock charges the first ``requests`` unique designs, cycled."""
    items = list({d.id: d for d in load_workload(standard_workload_path())}.values())
    builder = PromptBuilder(counter=TokenCounter())
    charges = []
    for i in range(requests):
        request = builder.build(items[i % len(items)])
        charges.append(builder.count_prompt(request) + (request.max_tokens or 0))
    return math.fsum(charges) / requests


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", action="store_true", help="also run the throttle before pacing (60 s)")
    args = parser.parse_args()

    issue = asyncio.run(drive(RateLimiter(requests_per_min=30), 34, 5))
    print(
        f"34 requests at concurrency 5, 30 requests/min: {issue['wall_s']:.1f} s "
        f"(p95 {issue['p95_s']:.1f} s), {issue['429']} 429 answers, {issue['errors']} failed (floor ~8 s)"
    )

    rps, headroom_s, n = 10.0, 2.0, 300
    charge = mean_charge(n)
    rpm, tpm = rps * 60, rps * 60 * charge
    limiter = RateLimiter(
        rpm, tpm, used_requests=rpm - rps * headroom_s, used_tokens=tpm - rps * charge * headroom_s
    )
    steady = asyncio.run(drive(limiter, n, 16))
    allowed = rps * headroom_s + rps * steady["run_wall_s"]
    print(
        f"{n} requests at concurrency 16, {rpm:g} requests/min and {tpm:.0f} tokens/min, "
        f"{headroom_s:g} s of each left: {steady['wall_s']:.1f} s, {steady['429']} 429 answers, "
        f"{steady['errors']} failed, {100.0 * steady['answered'] / allowed:.1f} % of the allowed requests"
    )

    if args.before:
        before_pacing()
        old = asyncio.run(drive(RateLimiter(requests_per_min=30), 34, 5))
        print(
            f"before pacing, the same 34 requests: {old['wall_s']:.1f} s (p95 {old['p95_s']:.1f} s), "
            f"{old['429']} 429 answers, {old['errors']} failed"
        )


if __name__ == "__main__":
    main()
