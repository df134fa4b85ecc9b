"""The pipeline's own overhead per request: end-to-end time minus the llm_call stage.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 5] [--concurrency 1 10]

Runs the standard workload (100 designs, 30 duplicates) through ``Pipeline.from_config``
(aiohttp transport, memory+disk cache in a fresh temp folder, SQLite store file, CPU
pool) against a loopback endpoint: the mock's MockServer with the ``fast`` profile when
``pytest_iterate.doubles.mock`` provides it, else a small aiohttp.web endpoint sleeping a few
milliseconds per call (printed which). For each concurrency it prints mean/p50/p95 of
``overhead_s = total_s - llm_s`` over all requests of all repeats, the per-stage means,
and the median wall time of one 100-design run. Target: mean overhead < 5 ms at
concurrency 10.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.pipeline.runner import Pipeline, PipelineResult
from pytest_iterate.pipeline.stages import STAGE_NAMES
from pytest_iterate.pipeline.workers import WorkerPool
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

_SERVE_MOCK = """
import asyncio, sys
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.server import MockServer

async def main():
    server = MockServer(MockLLM("fast", seed=1))
    await server.start()
    print(server.base_url, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await server.stop()

asyncio.run(main())
"""


@asynccontextmanager
async def endpoint(latency_s: float) -> AsyncIterator[tuple[str, str]]:
    """(base_url, description) of a loopback endpoint."""
    try:
        from pytest_iterate.doubles.mock.server import MockServer  # noqa: F401
    except ImportError:
        pass
    else:
        # its own process, so the mock's CPU work is not counted as pipeline overhead
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SERVE_MOCK, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdin is not None
        base_url = (await proc.stdout.readline()).decode().strip()
        try:
            yield base_url, "pytest_iterate.doubles.mock MockServer in a subprocess, profile 'fast'"
        finally:
            proc.stdin.close()
            await proc.wait()
        return
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(latency_s)
        text = "Notes.\n```python\ndef design():\n    return 42\n```\n"
        return web.json_response(
            {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", f"fallback aiohttp endpoint, {latency_s * 1000:.0f} ms per call"
    finally:
        await runner.cleanup()


async def one_run(
    base_url: str, concurrency: int, pool_kind: str = "thread"
) -> tuple[list[PipelineResult], float]:
    with tempfile.TemporaryDirectory() as folder:
        cfg = IterateConfig.load(
            {
                "base_url": base_url,
                "cache_dir": str(Path(folder) / "cache"),
                "store_path": str(Path(folder) / "artifacts.sqlite"),
                "max_concurrent_requests": max(concurrency, 1),
            },
            environ={},
            pyproject=None,
        )
        parts: dict[str, Any] = {"pool": WorkerPool(cfg.cpu_worker_pool_size, kind=pool_kind)}
        try:
            from pytest_iterate.tokens.guard import TokenGuard  # noqa: F401
        except ImportError:  # the token guard not there yet: run without it
            parts["guard"] = None
        async with Pipeline.from_config(cfg, **parts) as pipeline:
            workload = load_workload(standard_workload_path())
            start = time.perf_counter()
            results = await pipeline.run_many(workload, concurrency=concurrency)
            wall = time.perf_counter() - start
        parts["pool"].close()
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed, e.g. {failed[0].error!r}")
    return results, wall


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(x: float) -> str:
    return f"{x * 1000:7.3f}"


async def main_async(args: argparse.Namespace) -> int:
    async with endpoint(args.latency_ms / 1000) as (base_url, what):
        print(f"endpoint: {what}")
        print(f"workload: standard (100 designs, 30 duplicates); repeats: {args.repeats}; pool: {args.pool}")
        await one_run(base_url, 10, args.pool)  # warm-up (imports, encoders, connections)
        verdict = 0
        for concurrency in args.concurrency:
            overhead: list[float] = []
            stages: dict[str, list[float]] = {name: [] for name in STAGE_NAMES}
            walls: list[float] = []
            for _ in range(args.repeats):
                results, wall = await one_run(base_url, concurrency, args.pool)
                walls.append(wall)
                for r in results:
                    overhead.append(r.overhead_s)
                    for t in r.stages:
                        stages.setdefault(t.name, []).append(t.duration_s)
            mean = statistics.fmean(overhead)
            print(
                f"\nconcurrency {concurrency:>2}: overhead per request (ms) mean {ms(mean)}  "
                f"p50 {ms(pct(overhead, 0.5))}  p95 {ms(pct(overhead, 0.95))}  "
                f"(n={len(overhead)}); 100 designs wall median {statistics.median(walls):.3f} s"
            )
            print(
                "  stage means (ms): "
                + "  ".join(f"{n} {statistics.fmean(v) * 1000:.3f}" for n, v in stages.items())
            )
            if concurrency == 10:
                ok = mean < 0.005
                print(f"  target mean < 5 ms at concurrency 10: {'PASS' if ok else 'FAIL'}")
                verdict = 0 if ok else 1
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10])
    parser.add_argument(
        "--pool", choices=["thread", "process"], default="thread", help="CPU worker pool kind"
    )
    parser.add_argument("--latency-ms", type=float, default=3.0, help="fallback endpoint latency")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
