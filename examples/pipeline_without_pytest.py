"""The pipeline as a plain async API, against the loopback mock (README: "The pipeline without pytest").

    .venv/bin/python examples/pipeline_without_pytest.py [BASE_URL]

Without BASE_URL it starts the embedded mock server (``fast`` profile) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from pytest_iterate import (
    IterateConfig,
    LLMClient,
    LLMRequest,
    MockServer,
    Pipeline,
    ResponseCache,
    TokenGuard,
    batch_llm_call,
    load_workload,
)
from pytest_iterate.cache import CachingCaller
from pytest_iterate.pipeline.workload import standard_workload_path
from pytest_iterate.tokens import GuardingCaller


async def run(base_url: str, cache_dir: str) -> None:
    config = IterateConfig.load({"base_url": base_url, "model": "smollm2", "cache_dir": cache_dir})
    designs = load_workload(standard_workload_path())[:20]
    async with Pipeline.from_config(config) as pipeline:
        results = await pipeline.run_many(designs)
    for r in results[:3]:
        stages = ", ".join(f"{t.name} {t.duration_s * 1000:.1f} ms" for t in r.stages)
        print(
            f"{r.request_id}: ok={r.ok} complete={r.complete} cache={r.cache_tier} valid="
            f"{r.artifact.valid if r.artifact else None} | {stages}"
        )
    hits = sum(bool(r.cache_tier) for r in results)
    print(f"{sum(r.ok for r in results)}/{len(results)} ok, {hits} from cache")

    async with LLMClient(config) as client:
        answers = await batch_llm_call(["What is 2+2?", "Name a prime.", "What is 2+2?"], client=client)
    print([a[:40] for a in answers])

    # the layers the pipeline composes, around a client of your own
    async with LLMClient(config) as client:
        guarded = GuardingCaller.for_client(client, TokenGuard(config))
        cache = ResponseCache(config)
        caller = CachingCaller(guarded, cache, base_url=client.base_url, default_model=client.model)
        ask = {"role": "user", "content": "Name a prime."}
        question = LLMRequest(messages=(ask,), params={"temperature": 0})
        first, again = await caller(question), await caller(question)
        cache.close()
    print(f"layers: first from {first.cache_tier or 'the endpoint'}, again from {again.cache_tier}")


async def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        if argv:
            await run(argv[0], cache_dir)
            return
        async with MockServer(profile="fast", seed=1) as server:
            await run(server.base_url, cache_dir)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
