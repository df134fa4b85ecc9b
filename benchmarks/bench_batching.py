"""Batching in the pipeline: upstream calls and tokens saved versus batch_size 1, and the latency cost.

    .venv/bin/python benchmarks/bench_batching.py                         # the mock, v1 profile
    .venv/bin/python benchmarks/bench_batching.py --real http://127.0.0.1:8795/v1 --model smollm2

Each run sends the standard workload (100 designs, 30 of them repeats) through a new
pipeline with a new cache folder, once with ``batch_size = 1`` and once with each
``--batch-size`` (default 8), and prints for each: the upstream calls and tokens the
client counted (``iterate_requests_total``, ``iterate_tokens_total``), the answers, the
wall time, the mean and p95 end-to-end latency, and which strategy answered the items.

The mock (``v1``: 2.3 s a call) answers a list of prompts natively, decoding them side by
side, and a packed prompt as one answer of all its items one after the other. The real
target is any OpenAI-compatible server; ``scripts/real_endpoint.sh`` runs llama.cpp with
SmolLM2-135M (n_ctx 2048, one sequence at a time, list prompts refused): there the
workload is the one the real-endpoint CI sends (``max_tokens`` 64), at concurrency 4.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.endpoint import EndpointSpec, open_endpoint
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

REAL_WORKLOAD = Path(__file__).resolve().parent.parent / "fixtures/cassettes/smollm2-standard.workload.jsonl"


def _total(metrics: IterateMetrics, name: str, **labels: str) -> float:
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def one_run(
    target: str, workload: Path, batch_size: int, concurrency: int, **settings: Any
) -> dict[str, Any]:
    items = load_workload(workload)
    spec = EndpointSpec(target, profile="v1") if target == "mock" else EndpointSpec(target)
    async with open_endpoint(spec, threaded=target == "mock") as ep:
        values = ep.config_values(
            batch_size=batch_size,
            cache_dir=tempfile.mkdtemp(prefix="bench-batching-"),
            max_concurrent_requests=concurrency,
            **settings,
        )
        config = IterateConfig.load(values, pyproject=None)
        metrics = IterateMetrics()
        async with ep.pipeline(config, metrics=metrics) as pipeline:
            started = time.perf_counter()
            results = await pipeline.run_many(items, concurrency=concurrency)
            wall = time.perf_counter() - started
    latencies = sorted(r.total_s for r in results if r.ok)
    p95 = latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)] if latencies else math.nan
    served = Counter(
        r.extra.get("batch", {}).get("strategy", "alone") for r in results if r.llm_calls or r.extra
    )
    return {
        "batch_size": batch_size,
        "answered": sum(r.ok for r in results),
        "requests": len(results),
        "calls": _total(metrics, "iterate_requests_total"),
        "prompt_tokens": _total(metrics, "iterate_tokens_total", direction="prompt"),
        "completion_tokens": _total(metrics, "iterate_tokens_total", direction="completion"),
        "wall_s": wall,
        "mean_s": math.fsum(latencies) / len(latencies) if latencies else math.nan,
        "p95_s": p95,
        "served": dict(served),
        "errors": Counter(type(r.error).__name__ for r in results if r.error is not None),
    }


def report(label: str, runs: list[dict[str, Any]]) -> None:
    base = runs[0]
    print(f"== {label}")
    for run in runs:
        calls, tokens = run["calls"], run["prompt_tokens"] + run["completion_tokens"]
        line = (
            f"batch_size {run['batch_size']}: {run['answered']}/{run['requests']} answered, "
            f"{calls:.0f} upstream calls, {run['prompt_tokens']:.0f} prompt + {run['completion_tokens']:.0f} "
            f"completion tokens, wall {run['wall_s']:.1f} s, mean {run['mean_s']:.2f} s, "
            f"p95 {run['p95_s']:.2f} s"
        )
        if run is not base:
            saved_calls = 100.0 * (1 - calls / base["calls"]) if base["calls"] else math.nan
            base_tokens = base["prompt_tokens"] + base["completion_tokens"]
            saved_tokens = 100.0 * (1 - tokens / base_tokens) if base_tokens else math.nan
            line += (
                f"; vs batch_size 1: calls {saved_calls:+.0f} % saved, tokens {saved_tokens:+.0f} % saved, "
                f"mean latency {run['mean_s'] - base['mean_s']:+.2f} s, "
                f"p95 {run['p95_s'] - base['p95_s']:+.2f} s"
            )
        print(line)
        print(
            f"   answered by: {run['served']}" + (f"; errors: {dict(run['errors'])}" if run["errors"] else "")
        )


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--real", default=None, metavar="URL", help="also a real endpoint's base URL")
    parser.add_argument("--model", default="smollm2", help="model name at the real endpoint")
    parser.add_argument(
        "--batch-size", type=int, action="append", default=None, help="sizes to try (default 8)"
    )
    parser.add_argument("--window", type=float, default=None, help="batch_window_s (default: the config's)")
    parser.add_argument("--strategy", default=None, help="batch_strategy (default: the config's, auto)")
    parser.add_argument("--no-mock", action="store_true", help="skip the mock")
    args = parser.parse_args()
    sizes = [1, *(args.batch_size or [8])]
    window = {} if args.window is None else {"batch_window_s": args.window}
    if args.strategy is not None:
        window["batch_strategy"] = args.strategy
    if not args.no_mock:
        runs = [asyncio.run(one_run("mock", standard_workload_path(), b, 16, **window)) for b in sizes]
        report(f"mock (v1 profile), standard workload, concurrency 16{window and f', {window}'}", runs)
    if args.real:
        settings = {"model": args.model, "request_timeout_s": 600, "read_timeout_s": 300, **window}
        runs = [asyncio.run(one_run(args.real, REAL_WORKLOAD, b, 4, **settings)) for b in sizes]
        report(f"{args.real} ({args.model}), standard workload with max_tokens 64, concurrency 4", runs)


if __name__ == "__main__":
    main()
