"""Cache and guard in the pipeline are the caller layers: single flight, what is stored, retries.

The pipeline runs the phases of ``CachingCaller(GuardingCaller(client))`` as its
``cache_lookup``, ``token_guard`` and ``llm_call`` stages; these tests drive it over
the real LLMClient (httpx transport) and a respx route, and check the rules the
layers own: identical cacheable misses share one call, non-deterministic requests
are never coalesced, errors / Busy / guard-changed answers are never stored, a
``length`` stop is stored and replays flagged, and a second context-length error
is a ContextOverflow.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from pytest_iterate.cache.layer import CachingCaller
from pytest_iterate.cache.tiered import ResponseCache
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import Busy, ContextOverflow, ServerError
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.runner import Pipeline, PipelineResult
from pytest_iterate.pipeline.stages import STAGE_NAMES
from pytest_iterate.tokens.guard import TokenGuard
from pytest_iterate.tokens.layer import GuardingCaller

BASE = "http://llm.test/v1"
CODE = "```python\ndef solve():\n    return 1\n```"
Reply = Callable[[dict[str, Any]], httpx.Response]


def config(tmp_path: Path, **kw: Any) -> IterateConfig:
    values: dict[str, Any] = {
        "base_url": BASE,
        "transport": "httpx",
        "cache_dir": str(tmp_path / "cache"),
        "max_attempts": 1,
    }
    values.update(kw)
    return IterateConfig.load(values, environ={}, pyproject=None)


def ok(text: str = CODE, finish_reason: str = "stop") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "choices": [{"index": 0, "message": {"content": text}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10},
        },
    )


class Upstream:
    """A respx side effect that records bodies and can hold every answer until released."""

    def __init__(self, reply: Reply = lambda body: ok()) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        await self.release.wait()
        return self.reply(body)


@pytest.fixture
def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        router.post("/chat/completions").mock(side_effect=up)
        yield up  # type: ignore[misc]


@pytest.fixture
def cache(tmp_path: Path) -> AsyncIterator[ResponseCache]:
    c = ResponseCache(config(tmp_path), IterateMetrics())
    yield c  # type: ignore[misc]
    c.close()


def same_design(n: int, **kw: Any) -> list[DesignRequest]:
    return [DesignRequest(f"d{i}", "one task", ("the same",), **kw) for i in range(n)]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (on the loop, at most 5 s) until ``condition()`` holds."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


async def run_held(
    pipeline: Pipeline, up: Upstream, designs: list[DesignRequest], ready: Callable[[], bool], what: str
) -> list[PipelineResult]:
    """Run ``designs`` at once with every upstream answer held until ``ready()``."""
    up.release.clear()
    task = asyncio.ensure_future(pipeline.run_many(designs, concurrency=len(designs)))
    try:
        await until(ready, what)
    finally:
        up.release.set()
    return await task


async def test_the_pipeline_builds_the_caller_stack_its_stages_use(
    upstream: Upstream, cache: ResponseCache, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    guard = TokenGuard(cfg)
    async with Pipeline(cfg, cache=cache, guard=guard) as pipeline:
        caller, s = pipeline.caller, pipeline.services
        assert isinstance(caller, CachingCaller) and caller is s.cache
        assert isinstance(caller.inner, GuardingCaller) and caller.inner is s.guard
        assert s.guard.guard is guard and s.guard.endpoint_key == s.base_url == BASE
        assert caller.cache is cache
        result = await pipeline.run(same_design(1)[0])
        # the same stack answers a hand-built request from what the stages stored
        again = await caller(s.builder.build(same_design(1)[0]))
    assert result.ok and result.llm_calls == 1 and len(upstream.bodies) == 1
    assert again.cache_tier == "memory" and again.text == result.text and len(upstream.bodies) == 1


async def test_identical_misses_in_flight_share_one_call(
    upstream: Upstream, cache: ResponseCache, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    async with Pipeline(cfg, cache=cache, guard=TokenGuard(cfg)) as pipeline:
        assert pipeline.services.cache is not None
        flight = pipeline.services.cache.single_flight
        results = await run_held(
            pipeline,
            upstream,
            same_design(5),
            lambda: flight.coalesced == 4,
            "four followers to join the call in flight",
        )
    assert len(upstream.bodies) == 1
    leaders = [r for r in results if not r.coalesced]
    assert len(leaders) == 1 and leaders[0].llm_calls == 1 and leaders[0].cache_tier is None
    followers = [r for r in results if r.coalesced]
    assert len(followers) == 4
    for r in followers:
        assert r.ok and r.complete and r.llm_calls == 0 and r.attempts == 0 and r.cache_tier is None
        assert r.text == leaders[0].text and [t.name for t in r.stages] == list(STAGE_NAMES)
    assert cache.stats().stores == 1


async def test_nondeterministic_requests_are_never_coalesced_nor_stored(
    upstream: Upstream, cache: ResponseCache, tmp_path: Path
) -> None:
    cfg = config(tmp_path)
    hot = PromptBuilder(temperature=0.8)
    async with Pipeline(cfg, cache=cache, guard=TokenGuard(cfg), builder=hot) as pipeline:
        results = await run_held(
            pipeline,
            upstream,
            same_design(4),
            lambda: len(upstream.bodies) == 4,
            "four separate upstream calls",
        )
        later = await pipeline.run(same_design(1)[0])
    assert all(r.ok and not r.coalesced and r.llm_calls == 1 for r in [*results, later])
    assert len(upstream.bodies) == 5 and upstream.bodies[0]["temperature"] == 0.8
    assert cache.stats().stores == 0 and cache.stats().overall.lookups == 0  # not even looked up


async def test_a_failed_shared_call_reaches_every_follower_and_is_not_stored(
    upstream: Upstream, cache: ResponseCache, tmp_path: Path
) -> None:
    upstream.reply = lambda body: httpx.Response(503, json={"error": {"message": "down"}})
    cfg = config(tmp_path)
    async with Pipeline(cfg, cache=cache, guard=TokenGuard(cfg)) as pipeline:
        assert pipeline.services.cache is not None
        flight = pipeline.services.cache.single_flight
        results = await run_held(
            pipeline,
            upstream,
            same_design(3),
            lambda: flight.coalesced == 2,
            "two followers to join the failing call",
        )
        assert all(isinstance(r.error, ServerError) and not r.ok for r in results)
        assert [r.coalesced for r in results].count(True) == 2
        assert sum(r.llm_calls for r in results) == 1 and len(upstream.bodies) == 1
        assert all(r.stages[-1].name == "llm_call" and not r.stages[-1].ok for r in results)
        upstream.reply = lambda body: ok()
        recovered = await pipeline.run(same_design(1)[0])
    assert recovered.ok and recovered.cache_tier is None and recovered.llm_calls == 1
    assert len(upstream.bodies) == 2 and cache.stats().stores == 1


async def test_busy_is_a_failed_result_and_never_stored(cache: ResponseCache, tmp_path: Path) -> None:
    class BusyThenFine:
        base_url, model = BASE, "m"

        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self, request: LLMRequest, /, *, on_delta: Any = None) -> LLMResponse:
            self.calls += 1
            if self.calls == 1:
                raise Busy("queue full", retry_after_s=0.25)
            return LLMResponse(CODE, finish_reason="stop")

    client = BusyThenFine()
    async with Pipeline(config(tmp_path), client=client, cache=cache) as pipeline:
        first = await pipeline.run(same_design(1)[0])
        second = await pipeline.run(same_design(1)[0])
        third = await pipeline.run(same_design(1)[0])
    assert isinstance(first.error, Busy) and first.llm_calls == 1
    assert second.ok and second.cache_tier is None and second.llm_calls == 1
    assert third.cache_tier == "memory" and third.llm_calls == 0 and client.calls == 2


async def test_guard_changed_answers_are_not_stored(
    upstream: Upstream, cache: ResponseCache, tmp_path: Path
) -> None:
    cfg = config(tmp_path, context_window=600, default_max_tokens=128, token_policy="truncate")
    design = DesignRequest("long", "long", ("every word counts " * 300,))
    async with Pipeline(cfg, cache=cache, guard=TokenGuard(cfg)) as pipeline:
        first = await pipeline.run(design)
        second = await pipeline.run(design)
    for r in (first, second):
        assert r.ok and r.partial and not r.complete and r.llm_calls == 1 and r.cache_tier is None
        assert [w.action for w in r.warnings] == ["truncate"]
    assert len(upstream.bodies) == 2 and cache.stats().stores == 0 and cache.stats().refused == 2


async def test_an_answer_cut_at_max_tokens_is_stored_and_replays_flagged(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.reply = lambda body: ok(CODE, finish_reason="length")
    cfg = config(tmp_path)
    metrics = IterateMetrics()
    for tier in ("memory", "disk"):  # the same process, then a fresh cache over the same folder
        cache = ResponseCache(cfg, metrics)
        async with Pipeline(cfg, cache=cache, guard=TokenGuard(cfg, metrics=metrics)) as pipeline:
            if tier == "memory":
                cut = await pipeline.run(same_design(1)[0])
                assert cut.llm_calls == 1 and cut.cache_tier is None
                assert [w.action for w in cut.warnings] == ["length"] and not cut.complete
            hit = await pipeline.run(same_design(1)[0])
        cache.close()
        assert hit.ok and hit.cache_tier == tier and hit.llm_calls == 0
        assert hit.finish_reason == "length" and hit.partial and not hit.complete
        assert [w.action for w in hit.warnings] == ["length"]
    assert len(upstream.bodies) == 1


def context_error(body: dict[str, Any]) -> httpx.Response:
    message = "the request exceeds the available context size, try increasing it"  # no counts
    error = {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}
    return httpx.Response(400, json={"error": error})


async def test_a_second_context_error_is_a_context_overflow(upstream: Upstream, tmp_path: Path) -> None:
    upstream.reply = context_error  # an endpoint that rejects everything as too long
    cfg = config(tmp_path, cache_enabled=False)
    async with Pipeline(cfg, guard=TokenGuard(cfg)) as pipeline:
        result = await pipeline.run(same_design(1)[0])
    assert isinstance(result.error, ContextOverflow) and "after one retry" in str(result.error)
    # the first send, then one retry under the tightened bound; never a third
    assert result.llm_calls == 2 and len(upstream.bodies) == 2
    assert result.stages[-1].name == "llm_call" and not result.stages[-1].ok


async def test_a_hit_teaches_the_guard_nothing(cache: ResponseCache, tmp_path: Path) -> None:
    """A guard above the cache (the other way to stack them) only learns from real answers."""

    async def inflated(request: LLMRequest, /, *, on_delta: Any = None) -> LLMResponse:
        return LLMResponse("ok", finish_reason="stop", usage=Usage(10_000, 1))  # a wildly high count

    guard = TokenGuard(config(tmp_path))
    stored = CachingCaller(inflated, cache, base_url=BASE, default_model="m")
    request = LLMRequest(messages=({"role": "user", "content": "hi"},), params={"temperature": 0})
    await stored(request)  # filled by a caller without a guard
    before = guard.learner.intervals("e", guard.default_model)
    hit = await GuardingCaller(stored, guard, endpoint_key="e")(request)
    assert hit.cache_tier == "memory" and guard.learner.intervals("e", guard.default_model) == before
    assert guard.learner.observations("e", guard.default_model) == 0
