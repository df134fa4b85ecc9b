"""A workload with duplicates: the hit rate the cache reports is the one the data implies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from pytest_iterate.cache import CachingCaller, ResponseCache
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest, LLMResponse
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path


def design_request(d: DesignRequest) -> LLMRequest:
    prompt = f"Write {d.language} code for: {d.title}\n" + "\n".join(f"- {r}" for r in d.requirements)
    return LLMRequest(
        messages=({"role": "system", "content": "You write code."}, {"role": "user", "content": prompt}),
        max_tokens=d.max_tokens or 256,
        params={"temperature": 0},
    )


class Fake:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse:
        self.calls += 1
        await asyncio.sleep(0.001)
        return LLMResponse(text="```python\npass\n```", finish_reason="stop")


async def test_repeated_run_reports_the_hit_rate_the_data_implies(tmp_path: Path) -> None:
    designs = load_workload(standard_workload_path())
    requests = [design_request(d) for d in designs]
    n = len(requests)
    distinct = len({(d.title, d.language, d.requirements, d.max_tokens) for d in designs})
    assert distinct < n  # the workload has duplicates, or this test proves nothing
    config = IterateConfig(cache_dir=str(tmp_path / "cache"))

    # first run, one request at a time: every duplicate after its first occurrence is a hit
    first_cache, first_inner = ResponseCache(config), Fake()
    first = CachingCaller(first_inner, first_cache, base_url="http://x/v1", default_model="m")
    for r in requests:
        await first(r)
    s1 = first_cache.stats()
    assert first_inner.calls == distinct
    assert (s1.hits, s1.misses) == (n - distinct, distinct)
    assert s1.hit_rate == (n - distinct) / n
    first_cache.close()

    # repeated run in a new process (empty memory, same folder), concurrently: all hits
    second_cache, second_inner = ResponseCache(config), Fake()
    second = CachingCaller(second_inner, second_cache, base_url="http://x/v1", default_model="m")
    results = await asyncio.gather(*(second(r) for r in requests))
    s2 = second_cache.stats()
    assert second_inner.calls == 0 and s2.hit_rate == 1.0
    assert s2.disk.hits == distinct and s2.memory.hits == n - distinct
    assert all(r.cache_tier in {"memory", "disk"} for r in results)
    second_cache.close()


async def test_concurrent_first_run_coalesces_duplicates(tmp_path: Path) -> None:
    designs = load_workload(standard_workload_path())
    requests = [design_request(d) for d in designs]
    distinct = len({(d.title, d.language, d.requirements, d.max_tokens) for d in designs})
    cache, inner = ResponseCache(IterateConfig(cache_dir=str(tmp_path / "c"))), Fake()
    caller = CachingCaller(inner, cache, base_url="http://x/v1", default_model="m")
    await asyncio.gather(*(caller(r) for r in requests))
    saved = caller.single_flight.coalesced + cache.stats().hits
    assert inner.calls == distinct and saved == len(requests) - distinct
    cache.close()
