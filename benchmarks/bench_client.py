"""Client throughput against a no-op loopback server, in one run.

(a) raw aiohttp, (b) LLMClient (retry + throttle + telemetry) over the aiohttp
transport, (c) the same over the httpx transport. Each of R rounds runs the three in
turn (N requests at concurrency C each); medians of req/s and the ratios (b)/(a) and
(c)/(a) are printed. Target: (b)/(a) >= 0.8.

    python benchmarks/bench_client.py --requests 2000 --concurrency 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest

BODY = json.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
).encode()


async def start_server() -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


async def drive(n: int, c: int, one: Callable[[], Awaitable[object]]) -> float:
    """Run n calls with c workers; return requests per second."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return n / (time.perf_counter() - start)


async def bench_raw(base: str, n: int, c: int) -> float:
    url = base + "/chat/completions"
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

        async def one() -> object:
            async with session.post(url, json=payload) as resp:
                data = await resp.json()
            return data["choices"][0]["message"]["content"]

        await drive(min(n, 50), c, one)  # warm up the pool
        return await drive(n, c, one)


async def bench_client(base: str, n: int, c: int, transport: str) -> float:
    cfg = IterateConfig(base_url=base, model="m", transport=transport, max_concurrent_requests=c)  # type: ignore[arg-type]
    request = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)
    async with LLMClient(cfg, metrics=IterateMetrics()) as client:

        async def one() -> object:
            return (await client.call(request)).text

        await drive(min(n, 50), c, one)
        return await drive(n, c, one)


async def main_async(n: int, c: int, rounds: int, profile: str | None) -> dict[str, float]:
    runner, base = await start_server()
    results: dict[str, list[float]] = {"a_raw_aiohttp": [], "b_client_aiohttp": [], "c_client_httpx": []}
    try:
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            await bench_client(base, n, c, profile)
            prof.disable()
            pstats.Stats(prof).sort_stats(os.environ.get("BENCH_SORT", "cumulative")).print_stats(
                int(os.environ.get("BENCH_TOP", "35"))
            )
            return {}
        for r in range(rounds):
            # alternate the order of (a) and (b) so a drift in machine load favours neither
            if r % 2 == 0:
                results["a_raw_aiohttp"].append(await bench_raw(base, n, c))
                results["b_client_aiohttp"].append(await bench_client(base, n, c, "aiohttp"))
            else:
                results["b_client_aiohttp"].append(await bench_client(base, n, c, "aiohttp"))
                results["a_raw_aiohttp"].append(await bench_raw(base, n, c))
            results["c_client_httpx"].append(await bench_client(base, n, c, "httpx"))
            print(
                f"round {r + 1}/{rounds}: "
                + "  ".join(f"{k}={v[-1]:,.0f} req/s" for k, v in results.items()),
                flush=True,
            )
    finally:
        await runner.cleanup()
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nrequests={n} concurrency={c} rounds={rounds} (medians, req/s)")
    for k, v in med.items():
        print(f"  {k:18s} {v:10,.0f}")
    a_runs = results["a_raw_aiohttp"]
    paired_b = statistics.median(b / a for a, b in zip(a_runs, results["b_client_aiohttp"], strict=True))
    paired_c = statistics.median(c_ / a for a, c_ in zip(a_runs, results["c_client_httpx"], strict=True))
    b_a = med["b_client_aiohttp"] / med["a_raw_aiohttp"]
    c_a = med["c_client_httpx"] / med["a_raw_aiohttp"]
    verdict = "OK" if paired_b >= 0.8 else "BELOW TARGET"
    print(f"  ratio (b)/(a)      {paired_b:10.2f}   median of per-round ratios; target >= 0.80  {verdict}")
    print(f"  ratio (c)/(a)      {paired_c:10.2f}   median of per-round ratios")
    print(f"  (ratios of the medians: (b)/(a) {b_a:.2f}, (c)/(a) {c_a:.2f})")
    return {**med, "ratio_b_a": paired_b, "ratio_c_a": paired_c}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=["aiohttp", "httpx"], help="cProfile one client run instead")
    args = parser.parse_args()
    asyncio.run(main_async(args.requests, args.concurrency, args.rounds, args.profile))


if __name__ == "__main__":
    main()
