"""The pipeline's own cost per request, in two measures.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 5] [--concurrency 1 10]

Runs the standard workload (100 designs, 30 duplicates) through ``Pipeline.from_config``
(aiohttp transport, memory+disk cache in a fresh temp folder, SQLite store file, CPU
pool) against the mock's MockServer (``fast`` profile) in a process of its own, so the
mock's CPU is not counted. For each concurrency it prints, over all requests of all
repeats:

- outside the llm_call stage: ``total_s`` minus the ``llm_call`` stage (prompt building,
  cache lookup, guard, post-processing, store); the target, mean < 5 ms at concurrency 10,
  is on this measure;
- outside the HTTP attempts: ``PipelineResult.overhead_s`` = ``total_s - wire_s``, what
  the acceptance criterion ``latency.overhead_mean`` reads; it adds the client's own work
  inside ``llm_call`` (throttle, retry, parsing, the cache's single flight);

then the per-stage means and the median wall time of one 100-design run.
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
async def endpoint() -> AsyncIterator[tuple[str, str]]:
    """(base_url, description) of the mock in a subprocess (its CPU is not the pipeline's)."""
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
        pool = WorkerPool(cfg.cpu_worker_pool_size, kind=pool_kind)
        async with Pipeline.from_config(cfg, pool=pool) as pipeline:
            workload = load_workload(standard_workload_path())
            start = time.perf_counter()
            results = await pipeline.run_many(workload, concurrency=concurrency)
            wall = time.perf_counter() - start
        pool.close()
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
    async with endpoint() as (base_url, what):
        print(f"endpoint: {what}")
        print(f"workload: standard (100 designs, 30 duplicates); repeats: {args.repeats}; pool: {args.pool}")
        await one_run(base_url, 10, args.pool)  # warm-up (imports, encoders, connections)
        verdict = 0
        for concurrency in args.concurrency:
            outside_call: list[float] = []
            outside_wire: list[float] = []
            stages: dict[str, list[float]] = {name: [] for name in STAGE_NAMES}
            walls: list[float] = []
            for _ in range(args.repeats):
                results, wall = await one_run(base_url, concurrency, args.pool)
                walls.append(wall)
                for r in results:
                    call = r.stage("llm_call")
                    outside_call.append(r.total_s - (call.duration_s if call else 0.0))
                    outside_wire.append(r.overhead_s)
                    for t in r.stages:
                        stages.setdefault(t.name, []).append(t.duration_s)
            mean = statistics.fmean(outside_call)
            print(
                f"\nconcurrency {concurrency:>2} (n={len(outside_call)}; 100 designs wall median "
                f"{statistics.median(walls):.3f} s), per request (ms):"
            )
            for label, values in (
                ("outside the llm_call stage", outside_call),
                ("outside the HTTP attempts", outside_wire),
            ):
                print(
                    f"  {label:27s} mean {ms(statistics.fmean(values))}  p50 {ms(pct(values, 0.5))}  "
                    f"p95 {ms(pct(values, 0.95))}"
                )
            print(
                "  stage means (ms): "
                + "  ".join(f"{n} {statistics.fmean(v) * 1000:.3f}" for n, v in stages.items())
            )
            if concurrency == 10:
                ok = mean < 0.005
                print(
                    "  target: mean outside the llm_call stage < 5 ms at concurrency 10: "
                    + ("PASS" if ok else "FAIL")
                )
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
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
