"""The harness's own ceiling, raw mode beside pipeline mode, in one run: the highest
open-loop rate each drives while keeping the p99 scheduling lag (actual send - scheduled
send) under 10 ms, no errors, and at least 95 % of the rate delivered.

The target is a zero-latency loopback server in a separate process (so the server does
not compete for the harness's event loop). Both modes go through what ``iterate-bench
run`` uses (:func:`pytest_iterate.harness.targets.open_target`, limits sized to the rate):

* raw: one bare aiohttp POST per request (``iterate-bench run --raw``);
* pipeline: the standard design workload through the whole design pipeline (prompt
  build, token guard, client with retry and throttle, code extraction, store), no cache
  (``iterate-bench run``, the default).

The rate doubles from ``--start`` until a step fails (best of ``--tries`` runs per rate:
other processes on a shared machine add lag spikes that are not the harness's ceiling),
then bisects. Prints one line per step, each mode's ceiling and their ratio. Target:
both >= 1,000 req/s.

    .venv/bin/python benchmarks/bench_harness.py [--step-seconds 3] [--max-rate 16000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from _ceiling import LIMIT, add_search_options, find_ceiling, ok, step_result

from pytest_iterate.endpoint import EndpointSpec
from pytest_iterate.harness.limits import client_limits, raise_open_files_limit
from pytest_iterate.harness.loads import ConstantRate
from pytest_iterate.harness.runner import run_load
from pytest_iterate.harness.targets import SendOptions, open_target
from pytest_iterate.harness.workloads import default_workload, ping_workload

_SERVER = """
import asyncio, sys
from pytest_iterate.doubles.loopback import LoopbackServer
async def main():
    srv = await LoopbackServer(latency_s=0.0).start()
    print(srv.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def line(mode: str, r: dict[str, float]) -> str:
    return (
        f"{mode:8s} rate {r['rps']:7.0f} req/s  achieved {r['achieved']:7.1f}  "
        f"lag p99 {r['lag_p99'] * 1000:6.2f} ms  latency p50 {r['lat_p50'] * 1000:6.2f} ms "
        f"p99 {r['lat_p99'] * 1000:7.2f} ms  errors {r['errors']:.0f}  {'ok' if ok(r) else 'FAIL'}"
    )


async def ceiling(mode: str, url: str, args: argparse.Namespace) -> tuple[float, dict[str, float] | None]:
    """The highest passing rate of ``mode`` and its result at 1,000 req/s (when tried)."""
    raw = mode == "raw"
    limits = client_limits(
        [ConstantRate(args.max_rate)],
        request_timeout_s=10.0,
        max_attempts=1 if raw else 3,
        open_files=raise_open_files_limit(),
    )
    overrides: dict[str, Any] = {
        "cache_enabled": False,
        "max_concurrent_requests": limits.max_concurrent_requests,
        "max_connections": limits.max_connections,
    }
    workload = ping_workload() if raw else default_workload()
    async with open_target(
        EndpointSpec(url), workload, config_overrides=overrides, options=SendOptions(raw=raw)
    ) as target:

        async def trial(rps: float, seconds: float) -> dict[str, float]:
            result = await run_load(
                target.send, target.items, ConstantRate(rps), duration_s=seconds, warmup=int(rps * 0.3)
            )
            return step_result(rps, result.summary())

        good, steps = await find_ceiling(trial, args, lambda r: print(line(mode, r), flush=True), pause_s=0.3)
    return good, steps.get(1000)


async def main(args: argparse.Namespace) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
        results = {mode: await ceiling(mode, url, args) for mode in ("raw", "pipeline")}
    finally:
        proc.terminate()
        proc.wait(timeout=5)
    raw, pipe = results["raw"][0], results["pipeline"][0]
    for mode, (best, at_1000) in results.items():
        shown = (
            "not tried"
            if at_1000 is None
            else (f"lag p99 {at_1000['lag_p99'] * 1000:.2f} ms, {at_1000['achieved']:.0f} req/s delivered")
        )
        print(f"{mode:8s} ceiling {best:7.0f} req/s ({LIMIT}); at 1,000 req/s: {shown}")
    print(f"pipeline / raw ceiling: {pipe / raw if raw else float('nan'):.2f}  (target: both >= 1,000 req/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_search_options(parser, start=250.0, max_rate=16000.0)
    t0 = time.perf_counter()
    asyncio.run(main(parser.parse_args()))
    print(f"[{time.perf_counter() - t0:.0f} s]")
