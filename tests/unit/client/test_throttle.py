from __future__ import annotations

import asyncio
import time

import pytest

from pytest_iterate.client.errors import Busy
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.throttle import Throttle, parse_reset_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("1h2m3s", 3723.0),
        ("2m30.5s", 150.5),
        ("250us", 0.00025),
        ("3", 3.0),
        ("0", 0.0),
    ],
)
def test_parse_reset_duration(text: str, seconds: float) -> None:
    assert parse_reset_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "5x", "1s junk", "-1", "m"])
def test_parse_reset_duration_rejects(text: str | None) -> None:
    assert parse_reset_duration(text) is None


class FakeTime:
    def __init__(self) -> None:
        self.now = 10.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def gauges(m: IterateMetrics) -> tuple[float | None, float | None]:
    return (
        m.registry.get_sample_value("iterate_inflight_requests"),
        m.registry.get_sample_value("iterate_queue_depth"),
    )


async def test_limits_concurrency_and_keeps_gauges() -> None:
    m = IterateMetrics()
    t = Throttle(2, 10, m)
    peak = 0
    active = 0
    release = asyncio.Event()

    async def worker() -> None:
        nonlocal peak, active
        async with t:
            active += 1
            peak = max(peak, active)
            await release.wait()
            active -= 1

    tasks = [asyncio.create_task(worker()) for _ in range(5)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert t.inflight == 2 and t.waiting == 3
    assert gauges(m) == (2.0, 3.0)
    release.set()
    await asyncio.gather(*tasks)
    assert peak == 2
    assert gauges(m) == (0.0, 0.0)


async def test_fifo_order() -> None:
    t = Throttle(1, 10)
    order: list[int] = []
    gate = asyncio.Event()

    async def worker(i: int) -> None:
        async with t:
            if i == 0:
                await gate.wait()
            order.append(i)

    tasks = [asyncio.create_task(worker(i)) for i in range(4)]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


async def test_busy_when_queue_full_is_immediate_with_retry_after() -> None:
    t = Throttle(1, 2)
    await t.acquire()
    waiters = [asyncio.create_task(t.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    assert t.waiting == 2
    started = time.perf_counter()
    with pytest.raises(Busy) as info:
        await t.acquire()
    assert time.perf_counter() - started < 0.05
    assert info.value.retry_after_s > 0
    t.release()
    await waiters[0]
    t.release()
    await waiters[1]
    t.release()
    assert t.inflight == 0 and t.waiting == 0


async def test_max_queue_zero_means_busy_as_soon_as_full() -> None:
    t = Throttle(1, 0)
    async with t:
        with pytest.raises(Busy):
            await t.acquire()


async def test_cancelled_waiter_leaves_the_line() -> None:
    t = Throttle(1, 5)
    await t.acquire()
    waiter = asyncio.create_task(t.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert t.waiting == 0
    t.release()
    assert t.inflight == 0
    await t.acquire()  # the slot is free again
    assert t.inflight == 1


async def test_remaining_zero_waits_until_reset() -> None:
    ft = FakeTime()
    m = IterateMetrics()
    t = Throttle(4, 10, m, ft.clock, ft.sleep, jitter=0)
    t.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    assert t.blocked_for_s == pytest.approx(1.5)
    async with t:
        pass
    assert ft.sleeps == [pytest.approx(1.5)]
    # once the reset has passed nobody waits
    async with t:
        pass
    assert len(ft.sleeps) == 1


async def test_token_budget_and_floor() -> None:
    ft = FakeTime()
    t = Throttle(4, 10, None, ft.clock, ft.sleep, remaining_floor=5)
    t.observe_headers({"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "6m0s"})
    assert t.blocked_for_s == 0
    t.observe_headers({"x-ratelimit-remaining-tokens": "3", "x-ratelimit-reset-tokens": "12ms"})
    assert t.blocked_for_s == pytest.approx(0.012)
    t.observe_headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "garbage"})
    assert t.blocked_for_s == pytest.approx(0.012)


async def test_busy_while_paused_and_queue_full() -> None:
    ft = FakeTime()
    t = Throttle(4, 0, None, ft.clock, ft.sleep)
    t.block_for(60)
    with pytest.raises(Busy) as info:
        await t.acquire()
    assert info.value.retry_after_s >= 60


async def test_injected_sleep_that_does_not_move_the_clock_cannot_spin() -> None:
    """A fake sleep with the real clock: the block is slept out once, not in a busy loop."""
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    t = Throttle(2, 10, IterateMetrics(), sleep=fake_sleep, jitter=0)
    t.block_for(30.0)
    async with asyncio.timeout(2):
        async with t.slot():
            pass
    assert len(sleeps) == 1
    assert sleeps[0] == pytest.approx(30.0, abs=0.5)


async def test_block_extended_during_the_sleep_is_slept_out_too() -> None:
    ft = FakeTime()
    t = Throttle(2, 10, IterateMetrics(), clock=ft.clock, jitter=0)

    async def sleep_and_extend(seconds: float) -> None:
        await ft.sleep(seconds)
        if len(ft.sleeps) == 1:
            t.block_for(2.0)  # a 429's reset arrives while this caller waits

    t._sleep = sleep_and_extend
    t.block_for(1.0)
    async with t.slot():
        pass
    assert ft.sleeps == [pytest.approx(1.0), pytest.approx(2.0)]


async def test_busy_estimate_before_any_release_uses_how_long_the_slot_has_been_held() -> None:
    ft = FakeTime()
    t = Throttle(1, 0, None, ft.clock, ft.sleep)
    await t.acquire()
    ft.now += 2.0  # the one holder has had its slot for 2 s
    with pytest.raises(Busy) as info:
        await t.acquire()
    assert info.value.retry_after_s == pytest.approx(2.0)
    t.release()  # from now on the average hold time is known
    await t.acquire()
    ft.now += 0.5
    with pytest.raises(Busy) as again:
        await t.acquire()
    assert again.value.retry_after_s == pytest.approx(2.0)
