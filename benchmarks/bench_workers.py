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

from pytest_iterate.harness.limits import client_limits, raise_open_files_limit
from pytest_iterate.harness.loads import ConstantRate
from pytest_iterate.harness.targets import SendOptions
from pytest_iterate.harness.workers import WorkerPool, WorkerSetup, per_worker_shape
from pytest_iterate.harness.workloads import default_workload, ping_workload

LAG_P99_LIMIT_S = 0.010
POOL_CAP = 2000  # connections per worker


def ok(r: dict[str, float]) -> bool:
    return r["lag_p99"] < LAG_P99_LIMIT_S and r["errors"] == 0 and r["achieved"] >= 0.95 * r["rps"]


async def trial(pool: WorkerPool, rps: float, seconds: float) -> dict[str, float]:
    result, shares = await pool.run(ConstantRate(rps), duration_s=seconds, warmup=int(rps * 0.3))
    s = result.summary()
    return {
        "rps": rps,
        "achieved": s.throughput_rps or 0.0,
        "lag_p99": s.scheduling_lag_s.p99 or 0.0,
        "worst_worker_lag_p99": max(w.scheduling_lag_s.p99 or 0.0 for w in shares),
        "lat_p50": s.latency_s.p50 or 0.0,
        "errors": s.errors,
    }


async def best_of(pool: WorkerPool, rps: float, seconds: float, tries: int) -> dict[str, float]:
    best: dict[str, float] | None = None
    for _ in range(tries):
        r = await trial(pool, rps, seconds)
        if best is None or r["lag_p99"] < best["lag_p99"]:
            best = r
        if ok(r):
            break
    assert best is not None
    return best


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
        await trial(pool, 200, 1.0)  # connections opened, code paths warm
        good, bad = 0.0, None
        rps = args.start
        while rps <= args.max_rate:
            r = await best_of(pool, rps, args.step_seconds, args.tries)
            print(line(workers, r), flush=True)
            if not ok(r):
                bad = rps
                break
            good, rps = rps, rps * 2
        for _ in range(args.refine if bad is not None and good else 0):
            assert bad is not None
            mid = (good + bad) / 2
            r = await best_of(pool, mid, args.step_seconds, args.tries)
            print(line(workers, r), flush=True)
            good, bad = (mid, bad) if ok(r) else (good, mid)
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
    limit = f"lag p99 < {LAG_P99_LIMIT_S * 1000:.0f} ms"
    for n, best in results.items():
        print(f"{n} worker{'s' if n > 1 else ' '}  ceiling {best:7.0f} req/s ({args.mode} mode, {limit})")
    one, two = results[1], results[2]
    print(f"2 workers / 1 worker: {two / one if one else float('nan'):.2f}")


if __name__ == "__main__":  # worker processes are spawned: they import this file without running it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("raw", "pipeline"), default="raw")
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--start", type=float, default=1000.0)
    parser.add_argument("--max-rate", type=float, default=32000.0)
    parser.add_argument("--refine", type=int, default=2)
    parser.add_argument("--tries", type=int, default=2, help="runs per rate; the best counts")
    t0 = time.perf_counter()
    asyncio.run(main(parser.parse_args()))
    print(f"[{time.perf_counter() - t0:.0f} s]")
