#!/usr/bin/env python
"""Measure the mean uncached LLM call on a mock profile over the standard workload.

Each of the 70 distinct designs of ``fixtures/workloads/designs.jsonl`` (built by the
pipeline's PromptBuilder: ~400 prompt tokens, max_tokens 128 to 512, non-streamed)
goes once through our LLMClient (aiohttp transport) to the loopback mock server
(``MockServer`` on 127.0.0.1, its own thread and loop). Printed: the analytic mean
from the profile, the mean on virtual time for the seed, and the measured mean.

    .venv/bin/python scripts/measure_mock_llm_call.py                 # v1, seed 0, one at a time (~3 min)
    .venv/bin/python scripts/measure_mock_llm_call.py --concurrency 4 --check

At concurrency c the profile's load slowdown stretches every token by
``load_slowdown * (c - 1) / (capacity - 1)`` (v1: +4.8 % at 4), so calibrate at 1.
``--check`` exits 1 when the measured mean is outside ``--target`` +- ``--tolerance``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.doubles.mock.calibration import (
    CALIBRATION_MODEL,
    expected_mean_call_s,
    standard_bodies,
    standard_requests,
    virtual_mean_call_s,
)
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.profiles import load_profile
from pytest_iterate.doubles.mock.server import MockServer


async def measure(base_url: str, concurrency: int) -> tuple[list[float], list[int]]:
    config = IterateConfig(base_url=base_url, model=CALIBRATION_MODEL, request_timeout_s=60.0, max_attempts=1)
    gate = asyncio.Semaphore(concurrency)
    times: list[float] = []
    tokens: list[int] = []

    async def one(client: LLMClient, request: object) -> None:
        async with gate:
            start = time.perf_counter()
            response = await client.call(request)  # type: ignore[arg-type]
            times.append(time.perf_counter() - start)
            tokens.append(response.usage.completion_tokens if response.usage else 0)

    async with LLMClient(config, metrics=IterateMetrics()) as client:
        await asyncio.gather(*(one(client, r) for r in standard_requests()))
    return times, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="v1", help="mock profile name or JSON file (default v1)")
    parser.add_argument("--seed", type=int, default=0, help="the mock's seed (default 0, as the suite)")
    parser.add_argument("--concurrency", type=int, default=1, help="calls at once (default 1)")
    parser.add_argument("--target", type=float, default=2.3, help="seconds, for --check (default 2.3)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="relative, for --check (default 0.05)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the measured mean misses the target"
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error(f"--concurrency must be >= 1, got {args.concurrency}")

    profile = load_profile(args.profile)
    bodies = standard_bodies()
    analytic = expected_mean_call_s(profile, bodies)
    virtual = asyncio.run(virtual_mean_call_s(profile, bodies, args.seed))
    server = MockServer(MockLLM(profile, seed=args.seed)).start_in_thread()
    try:
        times, tokens = asyncio.run(measure(server.base_url, args.concurrency))
    finally:
        server.stop()
    mean = statistics.fmean(times)
    print(
        f"profile {profile.name}, seed {args.seed}: {len(times)} distinct designs of the standard workload, "
        f"concurrency {args.concurrency}"
    )
    rows = [
        ("analytic mean (profile means)", f"{analytic:.3f} s"),
        (f"virtual-time mean (seed {args.seed})", f"{virtual:.3f} s"),
        (
            "measured mean (LLMClient, loopback)",
            f"{mean:.3f} s  (p50 {statistics.median(times):.3f}, min {min(times):.3f}, "
            f"max {max(times):.3f}; {statistics.fmean(tokens):.0f} completion tokens)",
        ),
    ]
    for label, value in rows:
        print(f"  {label:<38}{value}")
    low, high = args.target * (1 - args.tolerance), args.target * (1 + args.tolerance)
    inside = low <= mean <= high
    verdict = "inside" if inside else "OUTSIDE"
    print(f"  target {args.target:g} s +- {args.tolerance:.0%}: {verdict} [{low:.3f}, {high:.3f}]")
    return 1 if args.check and not inside else 0


if __name__ == "__main__":
    sys.exit(main())
