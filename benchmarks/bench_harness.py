"""The harness's own ceiling: the highest open-loop rate it drives while keeping the
p99 scheduling lag (actual send - scheduled send) under 5 ms.

The target is a zero-latency loopback server in a separate process (so the server
does not compete for the harness's event loop); sends are bare aiohttp POSTs. The
rate doubles until the lag objective fails (best of ``--tries`` runs per rate), then
bisects. Prints one line per step and the result. Target: >= 1,000 req/s.

    .venv/bin/python benchmarks/bench_harness.py [--step-seconds 2] [--max-rate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import aiohttp

from pytest_iterate.harness.loads import ConstantRate
from pytest_iterate.harness.runner import run_load

LAG_P99_LIMIT_S = 0.005

_SERVER = """
import asyncio, sys
from pytest_iterate.doubles.loopback import LoopbackServer
async def main():
    srv = await LoopbackServer(latency_s=0.0).start()
    print(srv.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def trial(session: aiohttp.ClientSession, url: str, rps: float, seconds: float) -> dict[str, float]:
    body = b'{"model":"loopback","messages":[{"role":"user","content":"ping"}],"max_tokens":1}'
    headers = {"Content-Type": "application/json"}

    async def send(item: object) -> None:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()

    result = await run_load(send, [None], ConstantRate(rps), duration_s=seconds, warmup=int(rps * 0.2))
    s = result.summary()
    return {
        "rps": rps,
        "achieved": s.throughput_rps or 0.0,
        "lag_p99": s.scheduling_lag_s.p99,
        "lat_p50": s.latency_s.p50,
        "lat_p99": s.latency_s.p99,
        "errors": s.errors,
    }


async def best_of(
    session: aiohttp.ClientSession, url: str, rps: float, seconds: float, tries: int
) -> dict[str, float]:
    """The best of ``tries`` runs: other processes on a shared machine add lag spikes that are
    not the harness's ceiling, so one unlucky run does not end the search."""
    best: dict[str, float] | None = None
    for _ in range(tries):
        r = await trial(session, url, rps, seconds)
        if best is None or r["lag_p99"] < best["lag_p99"]:
            best = r
        if ok(r):
            break
        await asyncio.sleep(0.2)
    assert best is not None
    return best


def ok(r: dict[str, float]) -> bool:
    return r["lag_p99"] < LAG_P99_LIMIT_S and r["errors"] == 0 and r["achieved"] >= 0.95 * r["rps"]


async def main(step_seconds: float, start: float, max_rate: float, refine: int, tries: int) -> float:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            good, bad = 0.0, None
            rps = start
            while rps <= max_rate:
                r = await best_of(session, url, rps, step_seconds, tries)
                print(
                    f"rate {rps:8.0f} req/s  achieved {r['achieved']:8.1f}  "
                    f"lag p99 {r['lag_p99'] * 1000:6.2f} ms"
                    f"  latency p50 {r['lat_p50'] * 1000:6.2f} ms p99 {r['lat_p99'] * 1000:7.2f} ms  "
                    f"errors {r['errors']:.0f}  {'ok' if ok(r) else 'FAIL'}",
                    flush=True,
                )
                if ok(r):
                    good = rps
                    rps *= 2
                else:
                    bad = rps
                    break
                await asyncio.sleep(0.2)
            for _ in range(refine if bad is not None and good else 0):
                mid = (good + bad) / 2  # type: ignore[operator]
                r = await best_of(session, url, mid, step_seconds, tries)
                print(
                    f"rate {mid:8.0f} req/s  achieved {r['achieved']:8.1f}  "
                    f"lag p99 {r['lag_p99'] * 1000:6.2f} ms"
                    f"  {'ok' if ok(r) else 'FAIL'}",
                    flush=True,
                )
                good, bad = (mid, bad) if ok(r) else (good, mid)
                await asyncio.sleep(0.2)
        return good
    finally:
        proc.terminate()
        proc.wait(timeout=5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step-seconds", type=float, default=2.0)
    parser.add_argument("--start", type=float, default=250.0)
    parser.add_argument("--max-rate", type=float, default=20000.0)
    parser.add_argument("--refine", type=int, default=3)
    parser.add_argument("--tries", type=int, default=2, help="runs per rate; the best counts")
    args = parser.parse_args()
    t0 = time.perf_counter()
    best = asyncio.run(main(args.step_seconds, args.start, args.max_rate, args.refine, args.tries))
    print(
        f"harness ceiling: {best:.0f} req/s open-loop with p99 scheduling lag < "
        f"{LAG_P99_LIMIT_S * 1000:.0f} ms (target >= 1000)  [{time.perf_counter() - t0:.0f} s]"
    )
