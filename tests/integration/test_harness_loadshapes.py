"""The harness against a real loopback HTTP server (aiohttp.web on 127.0.0.1, port 0)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from pytest_iterate.doubles.loopback import LoopbackServer
from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, Poisson
from pytest_iterate.harness.runner import run_load

# Long enough that a busy shared runner's scheduling noise (a few ms per request) stays well
# inside the 5 % bound (25 ms); at 0.2 s the Poisson case flaked under load.
LATENCY_S = 0.5


def _sender(session: aiohttp.ClientSession, base_url: str) -> Callable[[object], Awaitable[None]]:
    url = base_url + "/chat/completions"

    async def send(item: object) -> None:
        async with session.post(url, json={"messages": [{"role": "user", "content": "hi"}]}) as resp:
            await resp.read()
            resp.raise_for_status()

    return send


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


@pytest.mark.parametrize(
    "shape", [ClosedLoop(8), ConstantRate(40), Poisson(40, seed=7)], ids=lambda s: s.label
)
async def test_mean_latency_matches_a_fixed_latency_server(
    session: aiohttp.ClientSession, shape: object
) -> None:
    async with LoopbackServer(latency_s=LATENCY_S) as srv:
        result = await run_load(_sender(session, srv.base_url), [1], shape, requests=30, warmup=4)
    summary = result.summary()
    assert summary.errors == 0 and summary.requests == 30
    # nothing measured faster than the server can answer, and no queueing added: idle, the mean
    # lands within 1-2 % of the server's latency; the upper bound leaves room for a loaded machine
    # (a harness that timed from its own send under an open loop, or queued, would be far off)
    assert summary.latency_s.min >= LATENCY_S
    assert LATENCY_S <= summary.latency_s.mean <= LATENCY_S * 1.15


async def test_stall_shows_in_open_loop_and_hides_in_naive_closed_loop(
    session: aiohttp.ClientSession,
) -> None:
    """The server freezes for 1 s, 0.5 s into the run (every request in that window waits).

    Open loop at 40 req/s for 2 s, latency from the scheduled time: the ~40 requests scheduled
    during the freeze all wait, so p90 and p95 show the stall. A naive closed-loop
    measurement of the same server (one worker, timing from its own send) has one slow
    request and then carries on: its p90/p95 look healthy and only the max hints at it.
    """
    async with LoopbackServer(latency_s=0.01, stall_at_s=0.5, stall_s=1.0) as srv:
        open_run = await run_load(_sender(session, srv.base_url), [1], ConstantRate(40), duration_s=2.0)
    async with LoopbackServer(latency_s=0.01, stall_at_s=0.5, stall_s=1.0) as srv:
        closed_run = await run_load(_sender(session, srv.base_url), [1], ClosedLoop(1), duration_s=2.0)
    opened, closed = open_run.summary(), closed_run.summary()

    # Open loop: ~half of the requests overlap the stall; percentiles show it.
    assert opened.latency_s.p90 > 0.5
    assert opened.latency_s.p95 > 0.6
    assert opened.latency_s.max >= 0.95
    # the harness itself kept the schedule: its lag is a small part of the 1 s stall (the bound
    # leaves room for a loaded 2-core machine, where the loop itself runs late by tens of ms)
    assert opened.scheduling_lag_s.p99 < 0.25

    # Naive closed loop: the same stall is one sample among many fast ones.
    assert closed.latency_s.max >= 0.95  # it did hit the stall ...
    assert closed.latency_s.p90 < 0.25  # ... but the percentiles hide it (10 ms calls, a 1 s stall)
    assert closed.latency_s.p95 < 0.25
