"""Attempts per logical request: counted by X-Client-Request-Id, or by the body's digest."""

from __future__ import annotations

import hashlib
import json

import pytest

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import MOCK_BASE_URL, IterateConfig
from pytest_iterate.client.errors import ConfigError
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.digest import request_digest
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.respx_router import mock_router

CHAT = "/v1/chat/completions"


def body(text: str = "Task: Build a cache") -> dict[str, object]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 50}


async def post(core: MockLLM, data: dict[str, object] | bytes, request_id: str | None = None) -> int:
    headers = {"X-Client-Request-Id": request_id} if request_id is not None else {}
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return (await core.handle("POST", CHAT, headers, raw)).status


async def test_attempts_are_counted_per_request_id_header() -> None:
    core = MockLLM("zero")
    for rid in ("a", "b", "a", "a"):
        await post(core, body(), rid)  # the same body: only the header tells them apart
    await core.handle("POST", CHAT, {"x-client-request-id": "b"}, json.dumps(body()).encode())
    stats = core.stats
    assert stats.logical_requests == 2 and stats.max_attempts == 3
    assert stats.attempts == {2: 1, 3: 1}
    assert core.attempts("a") == 3 and core.attempts("b") == 2 and core.attempts("c") == 0
    assert [(c.request_id, c.attempt) for c in core.calls] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("a", 3),
        ("b", 2),
    ]


async def test_without_the_header_identical_bodies_are_one_logical_request() -> None:
    core = MockLLM("zero")
    for text in ("Task: one", "Task: two", "Task: one"):
        await post(core, body(text))
    assert core.attempts(request_digest(body("Task: one"))) == 2
    assert core.attempts(request_digest(body("Task: two"))) == 1
    assert core.stats.logical_requests == 2 and core.stats.attempts == {1: 1, 2: 1}
    # stream flags travel with a request, they do not make another one
    await post(core, {**body("Task: two"), "stream": True})
    assert core.attempts(request_digest(body("Task: two"))) == 2


async def test_refused_requests_are_attempts_too() -> None:
    core = MockLLM("zero")
    assert await post(core, b"{not json", "x") == 400
    assert await post(core, b"{not json") == 400
    assert await post(core, {"model": "m"}) == 400  # no messages
    assert core.attempts("x") == 1
    assert core.attempts(hashlib.sha256(b"{not json").hexdigest()[:16]) == 1
    assert core.attempts(request_digest({"model": "m"})) == 1
    assert core.stats.logical_requests == 3
    assert (await core.handle("GET", "/v1/models", {"X-Client-Request-Id": "x"}, b"")).status == 200
    assert core.attempts("x") == 1  # only completion requests count


async def test_a_long_request_id_is_kept_as_its_sha256() -> None:
    core = MockLLM("zero")
    long_id = "r" * 500
    await post(core, body(), long_id)
    await post(core, body(), long_id)
    assert core.attempts(hashlib.sha256(long_id.encode()).hexdigest()) == 2


async def test_the_id_table_is_bounded_and_says_what_it_forgot() -> None:
    core = MockLLM("zero", keep_request_ids=2)
    for rid in ("a", "b", "c", "a"):
        await post(core, body(), rid)
    stats = core.stats
    assert stats.request_ids_evicted == 2  # "a" left when "c" came, then "b" when "a" came back
    assert core.attempts("a") == 1 and core.attempts("b") == 0
    assert stats.logical_requests == 4  # "a" came back after being forgotten: counted as new


@pytest.mark.parametrize("bad", [0, -3, 1.5, "9"])
def test_keep_request_ids_must_be_a_positive_count(bad: object) -> None:
    with pytest.raises(ConfigError, match=rf"keep_request_ids must be an integer >= 1, got {bad!r}"):
        MockLLM("zero", keep_request_ids=bad)  # type: ignore[arg-type]


class NoSleep:
    async def __call__(self, seconds: float) -> None:
        return None


async def test_our_client_retries_count_as_attempts_of_one_logical_request() -> None:
    core = MockLLM("fast", faults=FaultPlan(script={1: "503", 2: "429"}, retry_after_s=0.0))
    cfg = IterateConfig(base_url=MOCK_BASE_URL, max_attempts=3)
    with mock_router(core):
        async with LLMClient(cfg, metrics=IterateMetrics(), sleep=NoSleep()) as client:
            first = await client.call(LLMRequest(messages=({"role": "user", "content": "Task: a"},)))
            second = await client.call(LLMRequest(messages=({"role": "user", "content": "Task: b"},)))
    assert first.attempts == 3 and second.attempts == 1
    stats = core.stats
    assert stats.logical_requests == 2 and stats.max_attempts == 3 and stats.attempts == {1: 1, 3: 1}
    assert [c.attempt for c in core.calls] == [1, 2, 3, 1]
