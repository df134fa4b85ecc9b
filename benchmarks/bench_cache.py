"""Cache benchmark: the cost of a hit through CachingCaller, and a repeated run's speed-up.

    .venv/bin/python benchmarks/bench_cache.py [--repeats 7] [--calls 5000] [--latency-ms 5]

1. memory hit: ``await caching_caller(request)`` answered from the memory tier
   (key hashing + LRU lookup + a fresh response object), microseconds per call and
   calls per second. Compared with awaiting a bare Caller that returns at once.
2. disk hit: the same path with a memory tier of one entry cycling over many keys,
   so every lookup misses memory, reads SQLite, and promotes the entry.
3. repeated run: the standard workload (100 design prompts, 30 duplicates) sent at
   concurrency 10 through CachingCaller over the real LLMClient to a loopback aiohttp
   server that answers after ``--latency-ms``; first run (cold folder) versus a
   repeated run in a fresh cache object (memory empty, disk warm) and a third run in
   the same object (memory warm).

Medians over ``--repeats`` runs. Targets (issue 3): memory hit < 50 us, disk hit < 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_iterate.cache import CachingCaller, ResponseCache
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage

BASE = "http://127.0.0.1:1/v1"


class Instant:
    """A Caller that answers at once (the floor any layer adds to)."""

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse:
        return LLMResponse(text="def f():\n    return 42\n" * 20, finish_reason="stop", usage=Usage(120, 80))


def request_for(i: int) -> LLMRequest:
    return LLMRequest(
        messages=(
            {"role": "system", "content": "You are a careful senior engineer. Answer with code only."},
            {"role": "user", "content": f"Write a function number {i} that returns 42. " * 8},
        ),
        max_tokens=256,
        params={"temperature": 0},
    )


async def per_call_us(fn: Callable[[int], object], calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        await fn(i)  # type: ignore[misc]
    return (time.perf_counter() - start) / calls * 1e6


async def bench_hits(folder: Path, calls: int, repeats: int) -> dict[str, float]:
    instant = Instant()
    from pytest_iterate.client.metrics import IterateMetrics

    config = IterateConfig(cache_dir=str(folder / "mem"), cache_memory_size=4096)
    warm = ResponseCache(config, IterateMetrics())  # metrics on, as in the pipeline
    mem_caller = CachingCaller(instant, warm, base_url=BASE, default_model="m")
    keys = 256
    reqs = [request_for(i) for i in range(keys)]
    for r in reqs:
        await mem_caller(r)
    cold = ResponseCache(config.replace(cache_memory_size=1), IterateMetrics())
    disk_caller = CachingCaller(instant, cold, base_url=BASE, default_model="m")

    bare, mem, disk = [], [], []
    for _ in range(repeats):
        bare.append(await per_call_us(lambda i: instant(reqs[i % keys]), calls))
        mem.append(await per_call_us(lambda i: mem_caller(reqs[i % keys]), calls))
        disk.append(await per_call_us(lambda i: disk_caller(reqs[i % keys]), max(calls // 5, keys)))
    assert warm.stats().misses == keys, "memory benchmark must be all hits after warm-up"
    assert cold.stats().memory.hits == 0, "disk benchmark must miss memory every time"
    warm.close()
    cold.close()
    return {
        "bare_us": statistics.median(bare),
        "memory_us": statistics.median(mem),
        "disk_us": statistics.median(disk),
    }


async def start_server(latency_s: float) -> tuple[object, str]:
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(latency_s)
        text = f"```python\ndef solve():\n    return {len(str(body['messages']))}\n```"
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": body.get("model", "m"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/v1"


async def bench_repeat(folder: Path, latency_ms: float, repeats: int) -> dict[str, float]:
    from pytest_iterate.client.client import LLMClient
    from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

    designs = load_workload(standard_workload_path())
    requests = [
        LLMRequest(
            messages=({"role": "user", "content": f"{d.title}\n" + "\n".join(d.requirements)},),
            max_tokens=256,
            params={"temperature": 0},
        )
        for d in designs
    ]
    runner, base_url = await start_server(latency_ms / 1000)
    first, second, third, hit_rates = [], [], [], []
    try:
        for rep in range(repeats):
            config = IterateConfig(
                base_url=base_url, cache_dir=str(folder / f"run{rep}"), max_concurrent_requests=10
            )
            async with LLMClient(config) as client:

                async def run_all(caller: CachingCaller) -> float:
                    sem = asyncio.Semaphore(10)

                    async def one(r: LLMRequest) -> None:
                        async with sem:
                            await caller(r)

                    start = time.perf_counter()
                    await asyncio.gather(*(one(r) for r in requests))
                    return time.perf_counter() - start

                c1 = ResponseCache(config)
                first.append(
                    await run_all(
                        CachingCaller(client.call, c1, base_url=base_url, default_model=config.model)
                    )
                )
                c1.close()
                c2 = ResponseCache(config)  # a new process: memory empty, disk warm
                caller2 = CachingCaller(client.call, c2, base_url=base_url, default_model=config.model)
                second.append(await run_all(caller2))
                hit_rates.append(c2.stats().hit_rate)
                third.append(await run_all(caller2))  # memory warm
                c2.close()
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]
    return {
        "first_s": statistics.median(first),
        "repeat_disk_s": statistics.median(second),
        "repeat_memory_s": statistics.median(third),
        "repeat_hit_rate": min(hit_rates),
        "n": len(requests),
    }


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        hits = await bench_hits(Path(tmp), args.calls, args.repeats)
        rep = await bench_repeat(Path(tmp), args.latency_ms, max(3, args.repeats // 2))
    mem_ok = hits["memory_us"] < 50
    disk_ok = hits["disk_us"] < 1000
    print(f"cache hit cost through CachingCaller (median of {args.repeats} repeats)")
    rows = [
        ("bare Caller (no cache)", "bare_us", ""),
        ("memory hit", "memory_us", f"   target < 50 us: {'PASS' if mem_ok else 'FAIL'}"),
        ("disk hit (+ promote)", "disk_us", f"   target < 1000 us: {'PASS' if disk_ok else 'FAIL'}"),
    ]
    for label, key, verdict in rows:
        print(f"  {label:<22}  {hits[key]:8.2f} us/call  {1e6 / hits[key]:10.0f} calls/s{verdict}")
    print(
        f"repeated run: {rep['n']} workload requests, concurrency 10, LLMClient -> loopback server "
        f"answering in {args.latency_ms:g} ms"
    )
    print(f"  first run (cold)               {rep['first_s'] * 1000:8.1f} ms")
    print(
        f"  repeat, new process (disk)     {rep['repeat_disk_s'] * 1000:8.1f} ms"
        f"   speed-up x{rep['first_s'] / rep['repeat_disk_s']:.1f}   hit rate {rep['repeat_hit_rate']:.0%}"
    )
    print(
        f"  repeat, same process (memory)  {rep['repeat_memory_s'] * 1000:8.1f} ms"
        f"   speed-up x{rep['first_s'] / rep['repeat_memory_s']:.1f}"
    )
    return 0 if mem_ok and disk_ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
