"""CachingCaller over an httpx Caller and a respx route: coalescing, replay, failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import respx

from pytest_iterate.cache import CachingCaller, ResponseCache
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ServerError
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage

BASE = "http://llm.test/v1"


class HttpxCaller:
    """The smallest real Caller: one POST through httpx, non-streamed."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.calls = 0

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse:
        self.calls += 1
        body = request.body("gpt-4o-mini")
        body.pop("stream", None)
        body.pop("stream_options", None)
        reply = await self.client.post(BASE + request.path, json=body)
        if reply.status_code >= 500:
            raise ServerError(f"{BASE} answered {reply.status_code}", status=reply.status_code)
        data = reply.json()
        text = data["choices"][0]["message"]["content"]
        if on_delta is not None:
            on_delta(text)
        return LLMResponse(text=text, finish_reason="stop", usage=Usage.from_json(data.get("usage")))


def chat(content: str, **params: object) -> LLMRequest:
    return LLMRequest(messages=({"role": "user", "content": content},), params={"temperature": 0, **params})


def completion(text: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        },
    )


@pytest.fixture
def cache(tmp_path: Path) -> ResponseCache:
    c = ResponseCache(IterateConfig(cache_dir=str(tmp_path / "c")), IterateMetrics())
    yield c  # type: ignore[misc]
    c.close()


async def test_50_identical_concurrent_requests_make_one_upstream_call(cache: ResponseCache) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return completion("echo: " + json.loads(request.content)["messages"][0]["content"])

    with respx.mock(assert_all_called=True) as router:
        route = router.post(BASE + "/chat/completions").mock(side_effect=slow)
        async with httpx.AsyncClient() as client:
            caller = CachingCaller(HttpxCaller(client), cache, base_url=BASE, default_model="gpt-4o-mini")
            results = await asyncio.gather(*(caller(chat("same")) for _ in range(50)))
            assert route.call_count == 1
            assert {r.text for r in results} == {"echo: same"}
            assert len({id(r) for r in results}) == 50  # each caller owns its object
            assert caller.single_flight.coalesced == 49
            again = await caller(chat("same"))
            assert again.cache_tier == "memory" and route.call_count == 1


async def test_failure_reaches_every_waiter_and_nothing_is_cached(cache: ResponseCache) -> None:
    async def failing(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return httpx.Response(503)

    with respx.mock() as router:
        route = router.post(BASE + "/chat/completions").mock(side_effect=failing)
        async with httpx.AsyncClient() as client:
            caller = CachingCaller(HttpxCaller(client), cache, base_url=BASE, default_model="gpt-4o-mini")
            outcomes = await asyncio.gather(*(caller(chat("x")) for _ in range(10)), return_exceptions=True)
            assert all(isinstance(o, ServerError) for o in outcomes)
            assert route.call_count == 1
            route.mock(return_value=completion("recovered"))
            assert (await caller(chat("x"))).text == "recovered"
            assert route.call_count == 2


class SlowFake:
    def __init__(self, delay: float = 0.05, chunks: tuple[str, ...] = ("Hel", "lo", "!")) -> None:
        self.delay, self.chunks, self.calls = delay, chunks, 0

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse:
        self.calls += 1
        await asyncio.sleep(self.delay)
        for c in self.chunks:
            if on_delta is not None:
                on_delta(c)
        return LLMResponse(
            text="".join(self.chunks),
            finish_reason="stop",
            chunks=list(self.chunks),
            chunk_times_s=[0.01, 0.02, 0.03],
        )


async def test_cancelling_one_waiter_does_not_cancel_the_shared_call(cache: ResponseCache) -> None:
    inner = SlowFake()
    caller = CachingCaller(inner, cache, base_url=BASE, default_model="m")
    first = asyncio.create_task(caller(chat("c")))
    second = asyncio.create_task(caller(chat("c")))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).text == "Hello!"
    assert first.cancelled() and inner.calls == 1
    assert (await caller(chat("c"))).cache_tier == "memory"


async def test_streamed_hit_replays_chunks_through_on_delta(cache: ResponseCache) -> None:
    inner = SlowFake(delay=0)
    caller = CachingCaller(inner, cache, base_url=BASE, default_model="m")
    live: list[str] = []
    await caller(chat("s").replace(stream=True), on_delta=live.append)
    replayed: list[str] = []
    hit = await caller(chat("s").replace(stream=True), on_delta=replayed.append)
    assert live == replayed == ["Hel", "lo", "!"]
    assert hit.cache_tier == "memory" and hit.chunks == ["Hel", "lo", "!"]
    assert len(hit.chunk_times_s) == 3 and hit.ttft_s is not None and hit.ttft_s <= hit.total_s < 0.05
    # followers of a coalesced streamed call get the deltas too
    inner.delay = 0.02
    seen: list[list[str]] = [[], [], []]
    await asyncio.gather(*(caller(chat("t").replace(stream=True), on_delta=s.append) for s in seen))
    assert seen == [["Hel", "lo", "!"]] * 3 and inner.calls == 2


async def test_nondeterministic_requests_are_neither_cached_nor_coalesced(cache: ResponseCache) -> None:
    inner = SlowFake(delay=0.01)
    caller = CachingCaller(inner, cache, base_url=BASE, default_model="m")
    hot = chat("h", temperature=0.8)
    await asyncio.gather(caller(hot), caller(hot))
    await caller(hot)
    assert inner.calls == 3 and cache.stats().stores == 0


async def test_disabled_cache_passes_through(tmp_path: Path) -> None:
    off = ResponseCache(IterateConfig(cache_dir=str(tmp_path / "x"), cache_enabled=False))
    inner = SlowFake(delay=0)
    caller = CachingCaller(inner, off, base_url=BASE, default_model="m")
    await caller(chat("a"))
    await caller(chat("a"))
    assert inner.calls == 2 and not (tmp_path / "x").exists()


async def test_lookup_then_fetch_is_the_call_in_two_phases(cache: ResponseCache) -> None:
    inner = SlowFake(delay=0)
    caller = CachingCaller(inner, cache, base_url=BASE, default_model="m")
    request = chat("phases")
    found = await caller.lookup(request)
    assert found.key == caller.key_for(request) and found.cacheable and found.hit is None
    response = await caller.fetch(found, lambda: inner(request))
    assert response.text == "Hello!" and response.cache_key == found.key and not found.coalesced
    again = await caller.lookup(request)
    assert again.hit is not None and again.hit.cache_tier == "memory" and again.hit.text == "Hello!"
    assert inner.calls == 1 and cache.stats().stores == 1


async def test_a_non_cacheable_request_is_not_answered_from_the_cache(tmp_path: Path) -> None:
    """Even when a cache that allowed it stored the answer: two samples stay two samples."""
    folder = str(tmp_path / "shared")
    hot = chat("h", temperature=0.8)
    allowing = ResponseCache(IterateConfig(cache_dir=folder, cache_nondeterministic=True))
    await CachingCaller(SlowFake(delay=0), allowing, base_url=BASE, default_model="m")(hot)
    assert allowing.stats().stores == 1
    allowing.close()
    strict = ResponseCache(IterateConfig(cache_dir=folder))
    inner = SlowFake(delay=0)
    caller = CachingCaller(inner, strict, base_url=BASE, default_model="m")
    found = await caller.lookup(hot)
    assert not found.cacheable and found.hit is None
    answer = await caller(hot)
    assert answer.cache_tier is None and inner.calls == 1
    assert strict.stats().overall.lookups == 0  # not looked up, so not counted as a miss either
    strict.close()
