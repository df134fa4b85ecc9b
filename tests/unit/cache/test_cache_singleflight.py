"""SingleFlight alone: shared results, shared failures, nothing kept, cancellation isolated."""

from __future__ import annotations

import asyncio

import pytest

from pytest_iterate.cache import SingleFlight


async def test_failure_goes_to_every_waiter_and_the_key_is_forgotten() -> None:
    sf: SingleFlight[str] = SingleFlight()
    calls = 0

    async def boom() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("upstream down")

    outcomes = await asyncio.gather(*(sf.run("k", boom) for _ in range(5)), return_exceptions=True)
    assert calls == 1 and all(isinstance(o, RuntimeError) for o in outcomes)
    assert not sf.in_flight("k")

    async def ok() -> str:
        return "fine"

    assert await sf.run("k", ok) == "fine"  # the failure was not remembered


async def test_different_keys_do_not_share() -> None:
    sf: SingleFlight[int] = SingleFlight()
    results = await asyncio.gather(
        sf.run("a", lambda: asyncio.sleep(0.01, 1)), sf.run("b", lambda: asyncio.sleep(0.01, 2))
    )
    assert results == [1, 2] and sf.calls == 2 and sf.coalesced == 0


async def test_cancelling_every_waiter_leaves_no_unretrieved_exception() -> None:
    sf: SingleFlight[str] = SingleFlight()
    finished = asyncio.Event()

    async def slow_fail() -> str:
        await asyncio.sleep(0.02)
        finished.set()
        raise ValueError("late")

    waiter = asyncio.create_task(sf.run("k", slow_fail))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(finished.wait(), 1)  # the shared call kept running
    await asyncio.sleep(0.01)
    assert not sf.in_flight("k")
