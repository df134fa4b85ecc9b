"""Attempts per logical request: counted by X-Client-Request-Id, or by the body's digest."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ConfigError, ServerError
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.digest import request_digest
from pytest_iterate.doubles.mock.faults import FaultPlan, FirstAttempts, parse_fault
from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL, mock_router

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
    cfg = IterateConfig(base_url=MOCK_BASE_URL, transport="httpx", max_attempts=3)
    with mock_router(core):
        async with LLMClient(cfg, metrics=IterateMetrics(), sleep=NoSleep()) as client:
            first = await client.call(LLMRequest(messages=({"role": "user", "content": "Task: a"},)))
            second = await client.call(LLMRequest(messages=({"role": "user", "content": "Task: b"},)))
    assert first.attempts == 3 and second.attempts == 1
    stats = core.stats
    assert stats.logical_requests == 2 and stats.max_attempts == 3 and stats.attempts == {1: 1, 3: 1}
    assert [c.attempt for c in core.calls] == [1, 2, 3, 1]


# -- first-attempts faults (KINDxK=SHARE) ---------------------------------------------------


def test_first_attempts_form_parses_and_bad_values_name_the_accepted_forms() -> None:
    plan = FaultPlan.parse(["503x3=0.02", "429x1=0.5", "429=0.01"], retry_after_s=0.5)
    assert plan.first_attempts == (FirstAttempts("503", 3, 0.02), FirstAttempts("429", 1, 0.5))
    assert plan.rates == {"429": 0.01} and not plan.empty
    assert parse_fault("429msx2=0.1") == FirstAttempts("429ms", 2, 0.1)
    assert str(FirstAttempts("503", 3, 0.02)) == "503x3=0.02"
    for bad, why in [
        ("503x0=0.1", r"'503x0=0.1': the attempt count must be >= 1, got 0"),
        ("503xa=0.1", r"attempt count 'a' is not an integer \(use e.g. 503x3=0.02"),
        ("503x=0.1", r"attempt count '' is not an integer"),
        ("503x3=2", r"'503x3=2': the share must be between 0 and 1, got 2"),
        ("503x3=lots", r"share 'lots' is not a number"),
        (
            "418x3=0.1",
            r"unknown fault kind '418x3'.*forms: KIND=RATE \(429=0.02\), N:KIND \(5:hang\) or KINDxK",
        ),
        ("503x3", r"neither KIND=RATE .* nor KINDxK=SHARE \(503x3=0.02\)"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_fault(bad)
    with pytest.raises(
        ConfigError, match=r"first-attempts shares add up to 1.2, more than 1 \(503x3=0.7, 429x1=0.5\)"
    ):
        FaultPlan.parse(["503x3=0.7", "429x1=0.5"])
    with pytest.raises(
        ConfigError, match=r"'503x3' is a first-attempts rule: use FirstAttempts or the string 503x3"
    ):
        FaultPlan({"503x3": 0.1})
    with pytest.raises(ConfigError, match="attempt count must be an integer >= 1"):
        FirstAttempts("503", 0, 0.1)


async def client_loop(core: MockLLM, rid: str, max_attempts: int, pause: int) -> int:
    """Retry like a client: the same id on every attempt; returns the attempts made (negative: gave up)."""
    for attempt in range(1, max_attempts + 1):
        for _ in range(pause):  # interleave the loops differently from run to run
            await asyncio.sleep(0)
        if await post(core, body(f"Task: {rid}"), rid) == 200:
            return attempt
    return -max_attempts


async def run_calls(spec: str, order: list[int], concurrent: bool, max_attempts: int = 3) -> dict[str, int]:
    core = MockLLM("zero", seed=3, faults=FaultPlan.parse([spec], retry_after_s=0.0))
    rids = [f"call-{i}" for i in order]
    pauses = [(i * 7919) % 5 for i in order]
    if concurrent:
        outcomes = await asyncio.gather(
            *(client_loop(core, r, max_attempts, p) for r, p in zip(rids, pauses, strict=True))
        )
    else:
        outcomes = [await client_loop(core, r, max_attempts, 0) for r in rids]
    return dict(zip(rids, outcomes, strict=True))


async def test_first_attempts_faults_pick_the_same_requests_under_any_concurrency() -> None:
    n, share = 300, 0.2
    order = list(range(n))
    shuffled = order[::-1][::2] + order[::-1][1::2]
    one_by_one = await run_calls(f"503x3={share}", order, concurrent=False)
    together = await run_calls(f"503x3={share}", shuffled, concurrent=True)
    assert one_by_one == together
    plan = FaultPlan.parse([f"503x3={share}"])
    doomed = {rid for rid in one_by_one if plan.first_attempts_for(rid, 3) is not None}
    assert {rid for rid, made in one_by_one.items() if made < 0} == doomed
    sigma = (n * share * (1 - share)) ** 0.5
    assert abs(len(doomed) - n * share) <= 4 * sigma and doomed  # the share holds, and it is not empty
    assert {made for rid, made in one_by_one.items() if rid not in doomed} == {1}
    # another seed dooms other requests
    assert {rid for rid in one_by_one if plan.first_attempts_for(rid, 4) is not None} != doomed


@pytest.mark.parametrize(("k", "max_attempts"), [(3, 3), (2, 3), (5, 3), (1, 2)])
async def test_k_at_the_retry_bound_exhausts_it_and_one_less_succeeds_on_the_last_attempt(
    k: int, max_attempts: int
) -> None:
    core = MockLLM("zero", seed=1, faults=FaultPlan.parse([f"503x{k}=1"]))
    made = [await client_loop(core, f"r{i}", max_attempts, 0) for i in range(5)]
    if k >= max_attempts:
        assert made == [-max_attempts] * 5
        assert core.stats.attempts == {max_attempts: 5} and core.stats.faults == {"503": 5 * max_attempts}
    else:
        assert made == [k + 1] * 5
        assert core.stats.attempts == {k + 1: 5} and core.stats.faults == {"503": 5 * k}
    assert core.stats.max_attempts == min(k + 1, max_attempts)


async def test_a_429_first_attempts_rule_carries_the_plans_retry_after() -> None:
    core = MockLLM("zero", faults=FaultPlan.parse(["429x2=1"], retry_after_s=2.0))
    raw = json.dumps(body()).encode()
    replies = [await core.handle("POST", CHAT, {"X-Client-Request-Id": "q"}, raw) for _ in range(3)]
    assert [r.status for r in replies] == [429, 429, 200]
    assert replies[0].headers["retry-after"] == "2"


async def test_our_client_exhausts_its_attempts_on_the_doomed_share_and_only_there() -> None:
    # K = max_attempts: the doomed requests fail after exactly max_attempts attempts
    core = MockLLM("fast", seed=2, faults=FaultPlan.parse(["503x3=0.25"], retry_after_s=0.0))
    cfg = IterateConfig(base_url=MOCK_BASE_URL, transport="httpx", max_attempts=3)
    requests = [LLMRequest(messages=({"role": "user", "content": f"Task: {i}"},)) for i in range(40)]
    outcomes: list[int] = []
    with mock_router(core):
        async with LLMClient(cfg, metrics=IterateMetrics(), sleep=NoSleep()) as client:
            for request in requests:
                try:
                    outcomes.append((await client.call(request)).attempts)
                except ServerError as exc:
                    assert exc.status == 503
                    outcomes.append(-1)
    failed = outcomes.count(-1)
    assert 0 < failed < 40 and set(outcomes) == {1, -1}
    assert core.stats.max_attempts == 3 and core.stats.attempts == {1: 40 - failed, 3: failed}
