"""The open-loop ceiling with 1 and with 2 worker processes (``iterate-bench run --workers N``),
in one run, against a zero-latency server in a process of its own.

A ceiling is the highest constant rate a step meets with a p99 scheduling lag (actual send -
scheduled send, over every worker's samples, merged) under 10 ms, no errors and at least 95 %
of the rate delivered. Both configurations go through the same path (a
:class:`~pytest_iterate.harness.workers.WorkerPool`: one worker is one process sending, as two
are two), raw mode by default (``--mode pipeline`` for the design pipeline). The rate doubles
from ``--start`` until a step fails (best of ``--tries`` runs per rate: other processes on a
shared machine add lag spikes that are not the harness's ceiling), then bisects ``--refine``
times. Prints one line per step, each ceiling and their ratio.

The server and the workers share this machine's cores: with 2 cores, 2 workers and the server
want 3, so the ratio shows what a second process buys here, not on a larger machine.

    .venv/bin/python benchmarks/bench_workers.py [--step-seconds 3] [--mode raw|pipeline]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from _ceiling import LIMIT, add_search_options, find_ceiling, ok, step_result

from pytest_iterate.harness.limits import client_limits, raise_open_files_limit
from pytest_iterate.harness.loads import ConstantRate
from pytest_iterate.harness.targets import SendOptions
from pytest_iterate.harness.workers import WorkerPool, WorkerSetup, per_worker_shape
from pytest_iterate.harness.workloads import default_workload, ping_workload

POOL_CAP = 2000  # connections per worker


def line(workers: int, r: dict[str, float]) -> str:
    return (
        f"{workers} worker{'s' if workers > 1 else ' '}  rate {r['rps']:7.0f} req/s  "
        f"achieved {r['achieved']:7.1f}  "
        f"lag p99 {r['lag_p99'] * 1000:6.2f} ms (worst worker {r['worst_worker_lag_p99'] * 1000:6.2f})  "
        f"latency p50 {r['lat_p50'] * 1000:6.2f} ms  errors {r['errors']:.0f}  {'ok' if ok(r) else 'FAIL'}"
    )


async def ceiling(workers: int, url: str, args: argparse.Namespace) -> float:
    raw = args.mode == "raw"
    limits = client_limits(
        [per_worker_shape(ConstantRate(args.max_rate), workers)],
        request_timeout_s=10.0,
        max_attempts=1 if raw else 3,
        open_files=raise_open_files_limit(),
    )
    # at a rate the harness keeps up with, a zero-latency server has a handful of requests in
    # flight; a pool of thousands only lets an overloaded step exhaust the server's open files
    pool = min(limits.max_connections, POOL_CAP)
    overrides: dict[str, Any] = {
        "cache_enabled": False,
        "max_concurrent_requests": limits.max_concurrent_requests,
        "max_connections": pool,
    }
    setup = WorkerSetup(url, ping_workload() if raw else default_workload(), overrides, SendOptions(raw=raw))
    async with WorkerPool(setup, workers) as pool:

        async def trial(rps: float, seconds: float) -> dict[str, float]:
            result, shares = await pool.run(ConstantRate(rps), duration_s=seconds, warmup=int(rps * 0.3))
            r = step_result(rps, result.summary())
            r["worst_worker_lag_p99"] = max(w.scheduling_lag_s.p99 or 0.0 for w in shares)
            return r

        good, _ = await find_ceiling(trial, args, lambda r: print(line(workers, r), flush=True))
    return good


async def main(args: argparse.Namespace) -> None:
    server = [sys.executable, "-m", "pytest_iterate.harness.cli", "serve-loopback", "--latency", "0"]
    proc = subprocess.Popen(server, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        results = {n: await ceiling(n, url, args) for n in (1, 2)}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for n, best in results.items():
        print(f"{n} worker{'s' if n > 1 else ' '}  ceiling {best:7.0f} req/s ({args.mode} mode, {LIMIT})")
    one, two = results[1], results[2]
    print(f"2 workers / 1 worker: {two / one if one else float('nan'):.2f}")


if __name__ == "__main__":  # worker processes are spawned: they import this file without running it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("raw", "pipeline"), default="raw")
    add_search_options(parser, start=1000.0, max_rate=32000.0)
    t0 = time.perf_counter()
    asyncio.run(main(parser.parse_args()))
    print(f"[{time.perf_counter() - t0:.0f} s]")
