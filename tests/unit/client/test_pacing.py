"""Rate-limit pacing: the budget model, and the throttle against the mock's limiter in virtual time.

The simulations run the real :class:`Throttle` against the mock's real
:class:`RateLimiter` (token buckets with OpenAI's headers) on one virtual clock, so a
minute of traffic takes milliseconds and every number is exact.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from pytest_iterate.client.errors import Busy
from pytest_iterate.client.pacing import RatePacer, estimate_tokens, parse_reset_duration
from pytest_iterate.client.throttle import Throttle
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.mock.plan import rate_refusal
from pytest_iterate.doubles.mock.ratelimit import RateLimiter


class VirtualTime:
    """A clock and a ``sleep`` for many tasks: time jumps to the next wake-up once every
    task is blocked (each step lets the loop run a fixed number of rounds first)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def run(self, *coros: Coroutine[Any, Any, Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coros]
        while not all(t.done() for t in tasks):
            for _ in range(30):
                await asyncio.sleep(0)
            if self._timers:
                when, _, fut = heapq.heappop(self._timers)
                self.now = max(self.now, when)
                if not fut.done():
                    fut.set_result(None)
            elif not all(t.done() for t in tasks):
                raise AssertionError("deadlock: every task waits and no timer is due")
        return [t.result() for t in tasks]


@dataclass
class Outcome:
    sent: int = 0
    rejected: int = 0  # 429 answers
    failed: int = 0  # requests that ran out of attempts
    done: int = 0
    end_s: float = 0.0
    rejected_at: list[float] = field(default_factory=list)


async def simulate(
    vt: VirtualTime,
    limiter: RateLimiter,
    *,
    requests: int,
    concurrency: int,
    cost: Callable[[int], int] = lambda i: 100,
    latency_s: float = 0.2,
    pacing: bool = True,
    max_attempts: int = 3,
    seed: int = 0,
    on_the_way_s: float = 0.0,
) -> Outcome:
    """``requests`` requests at ``concurrency`` (closed loop) through a Throttle to the limiter;
    a 429 is retried after its retry-after-ms, up to ``max_attempts`` attempts. Each request
    reaches the limiter a random 0..``on_the_way_s`` after it was sent (a loaded machine, a
    queue in front of the endpoint)."""
    throttle = Throttle(64, 10_000, clock=vt.clock, sleep=vt.sleep, rng=random.Random(seed))
    way = random.Random(seed + 1)
    out = Outcome()
    queue = iter(range(requests))

    async def worker() -> None:
        for i in queue:
            for attempt in range(1, max_attempts + 1):
                tokens = cost(i)
                ticket = await throttle.acquire(tokens if throttle.paces_tokens else 0)
                out.sent += 1
                if on_the_way_s:
                    await vt.sleep(way.uniform(0.0, on_the_way_s))
                decision = limiter.take(tokens)
                if decision.allowed:
                    await vt.sleep(latency_s)
                    status, headers = 200, decision.headers
                else:
                    status, headers = 429, rate_refusal(decision, "m").headers
                if pacing:
                    throttle.observe_headers(headers, status=status, ticket=ticket)
                throttle.release()
                if status == 200:
                    out.done += 1
                    break
                out.rejected += 1
                out.rejected_at.append(vt.now)
                if attempt == max_attempts:
                    out.failed += 1
                    break
                await vt.sleep(int(headers["retry-after-ms"]) / 1000)
        out.end_s = max(out.end_s, vt.now)

    await vt.run(*(worker() for _ in range(concurrency)))
    return out


# -- the run: 34 requests at concurrency 5, 30 requests a minute ----------------------


async def test_34_requests_at_30_a_minute_take_about_8_s_with_at_most_one_429() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(requests_per_min=30, clock=vt.clock)
    out = await simulate(vt, limiter, requests=34, concurrency=5, latency_s=0.01)
    # 30 fit the bucket; the other 4 need 2 s each: the floor is 8 s
    assert out.done == 34 and out.failed == 0
    assert out.rejected <= 1
    assert 8.0 <= out.end_s <= 10.0, out.end_s


async def test_without_pacing_the_same_run_is_answered_with_429s() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(requests_per_min=30, clock=vt.clock)
    out = await simulate(vt, limiter, requests=34, concurrency=5, latency_s=0.01, pacing=False)
    assert out.rejected >= 4  # every request past the bucket is refused at least once


# -- steady state ---------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [2, 8, 32])
async def test_steady_state_keeps_the_refill_rate_with_at_most_one_429_per_window(concurrency: int) -> None:
    vt = VirtualTime()
    limiter = RateLimiter(requests_per_min=120, clock=vt.clock)  # 2 a second, a 120 burst
    out = await simulate(vt, limiter, requests=600, concurrency=concurrency, latency_s=0.3)
    windows = math.ceil(out.end_s / 60)
    assert out.failed == 0
    assert out.rejected <= windows, out.rejected_at
    allowed = 120 + 2.0 * out.end_s  # the bucket plus what refilled over the run
    assert out.done >= 0.95 * allowed - concurrency, (out.done, allowed)


@pytest.mark.parametrize("concurrency", [8, 16, 24])  # enough to outrun 15/s, fewer than the 30 left
async def test_requests_delayed_on_the_way_still_keep_the_limit(concurrency: int) -> None:
    """The endpoint reads its bucket when a request arrives, not when it was sent: a pacer that
    counted the refill from the send would spend refill the endpoint has not seen yet."""
    vt = VirtualTime()
    # 15 a second, 2 s of budget left at the start (as the acceptance scenario)
    limiter = RateLimiter(requests_per_min=900, used_requests=870, clock=vt.clock)
    out = await simulate(vt, limiter, requests=300, concurrency=concurrency, latency_s=0.05, on_the_way_s=0.3)
    assert out.failed == 0
    assert out.rejected <= 1, out.rejected_at
    allowed = 30 + 15.0 * out.end_s
    assert out.done >= 0.9 * allowed - concurrency, (out.done, allowed)


def test_the_refill_counts_from_the_answers_arrival_not_its_send() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    ticket = p.send(p.reserve(0, 0.0)[1], now=0.0)
    # 60 a minute (1/s); sent at 0, answered at 2: the endpoint read "9 left" somewhere in [0, 2]
    p.observe(headers("requests", 60, 9, "51s"), ticket=ticket, now=2.0)
    assert p.requests.level(2.0) == pytest.approx(9)  # not 9 + 2 s of refill it may not have had
    assert p.requests.level(3.0) == pytest.approx(9 + 50 / 51)


async def test_tokens_are_paced_when_the_token_budget_binds() -> None:
    vt = VirtualTime()
    # 600 requests a minute would allow 10/s; 30,000 tokens a minute at 250..750 tokens a
    # request allow about 1/s: the token budget binds
    limiter = RateLimiter(requests_per_min=600, tokens_per_min=30_000, clock=vt.clock)
    costs = [250 + 50 * (i % 11) for i in range(300)]
    out = await simulate(vt, limiter, requests=300, concurrency=8, cost=costs.__getitem__)
    assert out.failed == 0
    assert out.rejected <= math.ceil(out.end_s / 60), out.rejected_at
    used = sum(costs)
    allowed = 30_000 + 500.0 * out.end_s
    assert used >= 0.9 * allowed, (used, allowed, out.end_s)


async def test_without_pacing_the_token_budget_is_overrun() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(requests_per_min=600, tokens_per_min=30_000, clock=vt.clock)
    costs = [250 + 50 * (i % 11) for i in range(300)]
    out = await simulate(vt, limiter, requests=300, concurrency=8, cost=costs.__getitem__, pacing=False)
    assert out.rejected > 10 * math.ceil(out.end_s / 60)


async def test_concurrent_callers_leave_one_refill_interval_apart_not_together() -> None:
    vt = VirtualTime()
    pacer_throttle = Throttle(16, 100, clock=vt.clock, sleep=vt.sleep, rng=random.Random(3))
    limiter = RateLimiter(requests_per_min=60, clock=vt.clock)
    limiter.requests.take(60)  # an empty bucket: 1 request a second comes back
    first = await pacer_throttle.acquire()
    pacer_throttle.observe_headers(limiter.headers(), ticket=first)
    pacer_throttle.release()
    sent_at: list[float] = []

    async def one() -> None:
        await pacer_throttle.acquire()
        sent_at.append(vt.now)
        pacer_throttle.release()

    await vt.run(*(one() for _ in range(8)))
    gaps = [b - a for a, b in itertools.pairwise(sorted(sent_at))]
    assert len(set(sent_at)) == 8  # jitter: nobody leaves at the same instant
    assert all(g >= 0.5 for g in gaps), gaps  # about 1 s apart (jitter up to 10 % of it)
    assert sorted(sent_at)[-1] <= 8 * 1.1 + 1.0


# -- the budget model -------------------------------------------------------------------------


def headers(name: str, limit: float, remaining: float, reset: str) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{name}": str(limit),
        f"x-ratelimit-remaining-{name}": str(remaining),
        f"x-ratelimit-reset-{name}": reset,
    }


def test_the_rate_comes_from_limit_remaining_and_reset_as_a_lower_bound() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    # 60 a minute: the true rate is 1/s; level 9.4 shows as 9, with 50.6 s to full
    p.observe(headers("requests", 60, 9, "50.6s"), now=0.0)
    assert p.requests.lo == pytest.approx(50 / 50.6)
    assert p.requests.hi == pytest.approx(51 / 50.6)
    assert p.requests.rate is not None and p.requests.rate <= 1.0


def test_a_contradicting_answer_restarts_the_rate_bounds() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    p.observe(headers("requests", 60, 0, "60s"), now=0.0)  # 1/s
    p.observe(headers("requests", 60, 0, "6s"), now=1.0)  # now 10/s: the limit was raised
    assert p.requests.rate == pytest.approx(59 / 6)


def test_level_counts_units_sent_after_the_answered_request_once() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    tickets = [p.send(p.reserve(0, 0.0)[1], now=0.0) for _ in range(3)]
    # the first answer (remaining 10) came back after all three were sent
    p.observe(headers("requests", 60, 10, "50s"), ticket=tickets[0], now=0.0)
    assert p.requests.level(0.0) == pytest.approx(8)  # the 2 sent after it are still to come off
    p.observe(headers("requests", 60, 8, "52s"), ticket=tickets[2], now=0.0)
    assert p.requests.level(0.0) == pytest.approx(8)
    # an answer older than the anchor that says less is left wins: it saw a charge we missed
    p.observe(headers("requests", 60, 5, "55s"), ticket=tickets[1], now=0.0)
    assert p.requests.level(0.0) == pytest.approx(4)


def test_a_429_reporting_a_spent_budget_holds_it_back_for_its_retry_after() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    ticket = p.send(p.reserve(0, 0.0)[1], now=0.0)
    spent = {**headers("requests", 60, 0, "59s"), "retry-after-ms": "2500"}
    p.observe(spent, status=429, ticket=ticket, now=0.0)
    assert p.requests.not_before == pytest.approx(2.5)
    assert p.wait_s(0, now=0.0) == pytest.approx(2.5)


def test_a_429_without_rate_headers_delays_only_its_own_retry() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    ticket = p.send(p.reserve(0, 0.0)[1], now=0.0)
    p.observe({"retry-after": "1"}, status=429, ticket=ticket, now=0.0)
    assert p.wait_s(0, now=0.0) == 0.0


def test_a_429_for_tokens_holds_back_the_token_budget_only() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    ticket = p.send(p.reserve(500, 0.0)[1], now=0.0)
    answer = {
        **headers("requests", 600, 500, "10s"),
        **headers("tokens", 10_000, 120, "58.8s"),
        "retry-after-ms": "3000",
    }
    p.observe(answer, status=429, ticket=ticket, now=0.0)
    assert p.tokens.not_before == pytest.approx(3.0) and p.requests.not_before == 0.0
    assert p.requests.wait_s(1, 0.0) == 0.0  # the request budget is not spent
    assert p.tokens.wait_s(100, 0.0) == pytest.approx(3.0)


def test_without_a_limit_header_the_whole_reset_is_waited_out() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    p.observe({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "4s"}, now=0.0)
    assert p.requests.rate is None and p.wait_s(0, now=1.0) == pytest.approx(3.0)


def test_nothing_waits_before_the_endpoint_describes_a_budget() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    assert p.wait_s(10**6, now=0.0) == 0.0 and not p.paces_tokens


def test_waiting_callers_queue_behind_each_other_and_a_dropped_one_leaves_no_trace() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    p.observe(headers("requests", 60, 0, "60s"), now=0.0)  # empty, 59/60 a second
    waits = [p.reserve(0, 0.0) for _ in range(3)]
    assert [round(w, 2) for w, _ in waits] == [round(k * 60 / 59, 2) for k in (1, 2, 3)]
    for _, reservation in waits:
        p.drop(reservation)
    assert p.requests.pending == 0 and p.reserve(0, 0.0)[0] == pytest.approx(60 / 59)


def test_a_request_larger_than_the_bucket_waits_for_a_full_bucket_not_forever() -> None:
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    p.observe(headers("tokens", 1000, 0, "60s"), now=0.0)
    assert p.wait_s(5000, now=0.0) == pytest.approx(1000 / (999 / 60))


def test_jitter_is_a_bounded_random_share_of_one_interval() -> None:
    p = RatePacer(jitter=0.1, rng=random.Random(1), clock=lambda: 0.0)
    p.observe(headers("requests", 60, 0, "60s"), now=0.0)
    interval = 60 / 59
    waits = [p.reserve(0, 0.0)[0] - (k + 1) * interval for k in range(50)]
    assert all(0 <= w <= 0.1 * interval for w in waits) and len(set(waits)) == 50


def test_bad_values_are_refused_or_ignored() -> None:
    with pytest.raises(ValueError, match=r"jitter=1\.5 must be between 0 and 1"):
        RatePacer(jitter=1.5)
    with pytest.raises(ValueError, match=r"remaining_floor=-1 must be >= 0"):
        Throttle(1, 1, remaining_floor=-1)
    p = RatePacer(jitter=0, clock=lambda: 0.0)
    p.observe(headers("requests", float("nan"), -3, "soon"), now=0.0)
    p.observe({"x-ratelimit-limit-requests": "inf", "x-ratelimit-remaining-requests": "x"}, now=0.0)
    assert p.requests.limit is None and not p.requests.known
    assert parse_reset_duration("nan") is None and parse_reset_duration("inf") is None


def test_estimate_tokens_is_characters_over_four_plus_max_tokens() -> None:
    chat = LLMRequest(messages=({"role": "user", "content": "x" * 400},), max_tokens=100)
    assert estimate_tokens(chat) == 200
    batch = LLMRequest(prompt=("a" * 40, "b" * 80), endpoint="completions", max_tokens=10)
    assert estimate_tokens(batch) == 30 + 20


# -- the throttle around it -------------------------------------------------------------------


async def test_a_caller_that_would_wait_for_the_budget_with_the_queue_full_gets_busy_at_once() -> None:
    vt = VirtualTime()
    t = Throttle(4, 1, clock=vt.clock, sleep=vt.sleep, jitter=0)
    t.observe_headers(headers("requests", 60, 0, "60s"))
    waiter = asyncio.ensure_future(t.acquire())
    for _ in range(5):
        await asyncio.sleep(0)
    assert t.waiting == 1
    with pytest.raises(Busy, match="rate limit reached upstream") as info:
        await t.acquire()
    assert info.value.retry_after_s >= 2 * 60 / 59 - 0.01  # behind the one already waiting
    assert t.inflight == 1  # the refused caller gave its slot back
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert t.inflight == 0 and t.waiting == 0 and t.pacer.requests.pending == 0
