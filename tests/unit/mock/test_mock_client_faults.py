"""Every fault of the mock reaches our LLMClient as the right retry or exception (respx front end)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import BadResponse, ClientError, RequestTimeout, ServerError
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.profiles import LatencyProfile
from pytest_iterate.doubles.mock.ratelimit import RateLimiter
from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL, mock_router


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class VirtualSleeps(Sleeps):
    """Sleeps that advance a virtual clock (for the client and the mock's bucket alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += max(0.0, seconds)


def client(sleeps: Sleeps, clock: Any = None, **overrides: object) -> LLMClient:
    base = {"base_url": MOCK_BASE_URL, "transport": "httpx", "request_timeout_s": 0.3, "max_attempts": 3}
    cfg = IterateConfig(**{**base, **overrides})  # type: ignore[arg-type]
    extra = {"clock": clock} if clock is not None else {}
    return LLMClient(cfg, metrics=IterateMetrics(), sleep=sleeps, **extra)


def req(stream: bool = False, **kw: object) -> LLMRequest:
    return LLMRequest(
        messages=({"role": "user", "content": "Task: Build a cache"},), max_tokens=200, stream=stream, **kw
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    "kind",
    [
        "429",
        "429ms",
        "500",
        "502",
        "503",
        "529",
        "hang",
        "reset",
        "malformed_json",
        "stream_cut",
        "stream_error",
    ],
)
async def test_transient_faults_are_retried_once_and_then_succeed(kind: str, stream: bool) -> None:
    core = MockLLM("fast", seed=1, faults=FaultPlan(script={1: kind}, retry_after_s=0.25))
    sleeps = Sleeps()
    with mock_router(core):
        async with client(sleeps) as c:
            resp = await c.call(req(stream))
    assert resp.attempts == 2
    assert resp.text.startswith("## Build a cache")
    assert core.stats.completions == 2 and core.stats.faults == {kind: 1}
    if kind == "429":
        assert sleeps.calls == [1.0]  # Retry-After: 1
    if kind == "429ms":
        assert sleeps.calls == [0.25]  # retry-after-ms: 250


async def test_persistent_faults_stop_at_max_attempts() -> None:
    core = MockLLM("fast", faults=FaultPlan({"503": 1.0}))
    with mock_router(core):
        async with client(Sleeps()) as c:
            with pytest.raises(ServerError) as info:
                await c.call(req())
    assert info.value.status == 503
    assert core.stats.completions == 3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_empty_choices_is_a_bad_response_not_retried(stream: bool) -> None:
    core = MockLLM("fast", faults=FaultPlan(script={1: "empty_choices"}))
    with mock_router(core):
        async with client(Sleeps()) as c:
            if stream:
                # a stream with no choices at all, then [DONE]: the client takes it today as an
                # empty answer (not as a BadResponse like the whole body); pinned so a change shows
                resp = await c.call(req(True))
                assert resp.text == "" and resp.attempts == 1
            else:
                with pytest.raises(BadResponse) as info:
                    await c.call(req())
                assert not info.value.retryable
    assert core.stats.completions == 1


async def test_context_length_exceeded_is_a_client_error_with_its_code() -> None:
    core = MockLLM(LatencyProfile("tiny", context_window=100))
    with mock_router(core):
        async with client(Sleeps()) as c:
            with pytest.raises(ClientError) as info:
                await c.call(LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=500))
    assert info.value.status == 400 and info.value.code == "context_length_exceeded"
    assert core.stats.completions == 1


async def test_rate_limit_bucket_makes_the_client_wait_the_advertised_time() -> None:
    # one virtual clock for the bucket and the client: sleeping really lets the bucket refill
    sleeps = VirtualSleeps()
    core = MockLLM("fast", rate_limit=RateLimiter(requests_per_min=1, clock=sleeps.clock))
    with mock_router(core):
        async with client(sleeps, retry_after_cap_s=120.0, clock=sleeps.clock) as c:
            await c.call(req())
            second = await c.call(req())
    assert second.text.startswith("## Build a cache")
    assert sleeps.now >= 59.0  # a 429 with Retry-After: 60, or a pre-emptive wait on x-ratelimit-reset
    assert 2 <= core.stats.completions <= 3
    assert core.stats.faults.get("rate_limit", 0) == core.stats.completions - 2


async def test_hang_really_waits_for_the_timeout() -> None:
    import time

    core = MockLLM("fast", faults=FaultPlan(script={1: "hang"}))
    with mock_router(core):
        async with client(Sleeps(), max_attempts=1) as c:
            t0 = time.monotonic()
            with pytest.raises(RequestTimeout):
                await c.call(req())
            assert time.monotonic() - t0 >= 0.25


async def test_same_seed_same_answers_through_the_client() -> None:
    texts = []
    for _ in range(2):
        core = MockLLM("fast", seed=9)
        with mock_router(core):
            async with client(Sleeps()) as c:
                texts.append([(await c.call(req())).text, (await c.call(req(True))).text])
    assert texts[0] == texts[1] and texts[0][0] == texts[0][1]
    assert json.dumps(texts)  # plain strings


async def test_the_in_process_router_answers_probes_at_the_root_and_under_the_base_url() -> None:
    import httpx

    core = MockLLM("fast")
    root = MOCK_BASE_URL.rsplit("/v1", 1)[0]
    with mock_router(core):
        async with httpx.AsyncClient() as http:
            health = await http.get(root + "/health")
            version = await http.get(root + "/version")
            models = await http.get(MOCK_BASE_URL + "/models")
            one = await http.get(MOCK_BASE_URL + "/models/gpt-4o-mini")
            elsewhere = await http.get(root + "/nothing/here")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert version.status_code == 200 and version.json()["version"]
    assert models.status_code == 200 and one.json()["id"] == "gpt-4o-mini"
    assert elsewhere.status_code == 404
    paths = ["/health", "/version", "/v1/models", "/v1/models/gpt-4o-mini", "/nothing/here"]
    assert [c.path for c in core.calls] == paths
