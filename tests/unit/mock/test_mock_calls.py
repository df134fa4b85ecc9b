"""What the core remembers: counters for every request, a bounded ring of recent records."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest

from pytest_iterate.client.errors import ConfigError
from pytest_iterate.doubles.mock.calls import CallLog
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.faults import FaultPlan

CHAT = "/v1/chat/completions"


def body(i: int, **extra: object) -> bytes:
    messages = [{"role": "user", "content": f"Task: design {i}\n- keep it small {i}"}]
    return json.dumps({"model": "gpt-4o-mini", "messages": messages, "max_tokens": 60, **extra}).encode()


async def send(core: MockLLM, start: int, stop: int) -> None:
    for i in range(start, stop):
        reply = await core.handle("POST", CHAT, {}, body(i))
        assert reply.status == 200


async def test_memory_and_records_stay_bounded_over_many_calls() -> None:
    core = MockLLM("zero", keep_calls=50, keep_request_ids=1000)
    tracemalloc.start()  # before the warm-up: blocks freed later must have been traced
    try:
        # warm up past every bounded memo (2,048 answers, 4,096 token counts)
        await send(core, 0, 4500)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await send(core, 4500, 7000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 2,500 more calls: ~0.1 MB (memo entries changing size); keeping every record and
    # body, as the core did before, grew by ~3 MB
    assert grown < 400_000, f"memory grew by {grown} bytes over 2,500 calls"
    calls = core.calls
    assert len(calls) == 50 and [c.index for c in calls] == list(range(6951, 7001))
    assert all(c.body is None for c in calls)
    stats = core.stats
    assert stats.recorded == 7000 and stats.kept == 50
    assert stats.completions == 7000 and stats.statuses == {200: 7000} and stats.routes == {"chat": 7000}
    assert stats.logical_requests == 7000 and stats.request_ids_evicted == 6000


async def test_counters_cover_calls_that_left_the_ring() -> None:
    core = MockLLM("zero", faults=FaultPlan(script={1: "503", 2: "429", 3: "reset"}), keep_calls=2)
    for i in range(6):
        await core.handle("POST", CHAT, {}, body(i))
    await core.handle("GET", "/v1/models", {}, b"")
    await core.handle("GET", "/v1/nothing", {}, b"")
    stats = core.stats
    assert [c.path for c in core.calls] == ["/v1/models", "/v1/nothing"]
    assert stats.statuses == {503: 1, 429: 1, 0: 1, 200: 4, 404: 1}
    assert stats.faults == {"503": 1, "429": 1, "reset": 1}
    assert stats.routes == {"chat": 6, "models": 1, "other": 1}
    assert stats.recorded == 8 and stats.kept == 2 and stats.requests == 8


async def test_bodies_are_kept_only_when_asked() -> None:
    core = MockLLM("zero", keep_calls=3, keep_bodies=True)
    for i in range(5):
        await core.handle("POST", CHAT, {}, body(i, stream=False))
    kept = [c.body["messages"][0]["content"].splitlines()[0] for c in core.calls]
    assert kept == ["Task: design 2", "Task: design 3", "Task: design 4"]


@pytest.mark.parametrize("bad", [-1, 2.5, True, "10"])
def test_keep_calls_must_be_a_count(bad: object) -> None:
    with pytest.raises(ConfigError, match=rf"keep_calls must be an integer >= 0 .*got {bad!r}"):
        CallLog(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="keep_calls"):
        MockLLM("zero", keep_calls=bad)  # type: ignore[arg-type]


async def test_keep_calls_zero_keeps_no_records_but_counts() -> None:
    core = MockLLM("zero", keep_calls=0)
    await send(core, 0, 3)
    assert core.calls == [] and core.stats.recorded == 3 and core.stats.statuses == {200: 3}
