"""Client-side throttle: a concurrency limit, rate-limit pacing, fast Busy.

``async with throttle:`` (or ``ticket = await throttle.acquire(tokens)`` ...
``throttle.release()``) holds one of ``max_concurrent`` slots for the duration of one
attempt. Callers that find every slot taken wait in FIFO order; when ``max_queue``
callers are already waiting, a new caller gets :class:`~pytest_iterate.client.errors.Busy`
at once (no await, so well under a millisecond) carrying an estimate of when to come
back, instead of a hang.

Rate limits: :meth:`Throttle.observe_headers` feeds every answer's
``x-ratelimit-limit/remaining/reset-requests`` and ``-tokens`` (and a 429's
``Retry-After``) to a :class:`~pytest_iterate.client.pacing.RatePacer`. A caller holding
a slot then waits, if it must, until the endpoint's budgets hold its request (1 request,
``tokens`` tokens) at their refill rate, with jitter, before it sends: requests go out
one refill interval apart instead of in a burst that the endpoint answers with 429s,
and nobody waits out a whole reset when one request's worth has come back (see
:mod:`.pacing`). That wait counts as queueing (``iterate_queue_depth``) and against
``max_queue``: a caller that would have to wait while ``max_queue`` callers already do
gets ``Busy``, whose retry-after includes the wait for the budget.

``iterate_inflight_requests`` and ``iterate_queue_depth`` are read from the throttle
when the registry is collected (``Gauge.set_function``), so the hot path does no
metric work; one throttle reports per :class:`IterateMetrics` (the last one made).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_iterate.client.errors import Busy
from pytest_iterate.client.pacing import RatePacer, Reservation, Ticket, parse_reset_duration

if TYPE_CHECKING:
    from pytest_iterate.client.metrics import IterateMetrics

__all__ = ["Throttle", "Ticket", "parse_reset_duration"]


class Throttle:
    """At most ``max_concurrent`` holders, at most ``max_queue`` waiters, then ``Busy``;
    sends paced to the endpoint's rate limits (``pacer``)."""

    __slots__ = (
        "_avg_hold_s",
        "_clock",
        "_inflight",
        "_pausing",
        "_sleep",
        "_starts",
        "_waiters",
        "max_concurrent",
        "max_queue",
        "metrics",
        "pacer",
    )

    def __init__(
        self,
        max_concurrent: int,
        max_queue: int,
        metrics: IterateMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        *,
        remaining_floor: int = 0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent={max_concurrent!r} must be >= 1")
        if max_queue < 0:
            raise ValueError(f"max_queue={max_queue!r} must be >= 0")
        if remaining_floor < 0:
            raise ValueError(f"remaining_floor={remaining_floor!r} must be >= 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.metrics = metrics
        self.pacer = RatePacer(floor=remaining_floor, jitter=jitter, rng=rng, clock=clock)
        self._clock = clock
        self._sleep = sleep
        self._inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pausing = 0  # slot holders waiting for the rate-limit budget
        self._avg_hold_s = 0.0  # moving average of slot hold times, for Busy estimates
        self._starts: deque[float] = deque()
        if metrics is not None:
            # read at scrape time: no gauge update (and its lock) on the hot path
            metrics.inflight.set_function(lambda: float(self._inflight))
            metrics.queue_depth.set_function(lambda: float(self.waiting))

    # -- state ---------------------------------------------------------------------------
    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot or, holding one, for the rate-limit budget."""
        return len(self._waiters) + self._pausing

    @property
    def remaining_floor(self) -> float:
        return self.pacer.requests.floor

    @property
    def paces_tokens(self) -> bool:
        """Whether the endpoint has a token budget: only then do callers need to count tokens."""
        return self.pacer.paces_tokens

    @property
    def blocked_for_s(self) -> float:
        """Seconds a new request would wait for the rate-limit budget (0 if none)."""
        return self.pacer.wait_s(0.0)

    def retry_after_estimate(self) -> float:
        """When a caller turned away now could expect to be sent, in seconds: a slot's average
        hold time (before the first release: how long the oldest holder has held its slot) for
        each round of callers ahead, plus the wait for the rate-limit budget."""
        hold = self._avg_hold_s
        if not hold:
            hold = max(0.05, self._clock() - self._starts[0]) if self._starts else 0.05
        rounds = (self.waiting + 1) / self.max_concurrent
        return round(self.blocked_for_s + max(rounds * hold, 0.001), 4)

    # -- acquire/release -----------------------------------------------------------------
    async def acquire(self, tokens: float = 0.0) -> Ticket:
        """Take a slot (waiting in line), then wait for the budget of one request of ``tokens``
        tokens; raise Busy when the line is full. The ticket goes to :meth:`observe_headers`."""
        if self._inflight < self.max_concurrent and not self._waiters:
            self._inflight += 1
        else:
            if self.waiting >= self.max_queue:
                raise Busy(
                    f"throttle saturated: {self._inflight} in flight, {self.waiting} waiting "
                    f"(max_queue={self.max_queue})",
                    retry_after_s=self.retry_after_estimate(),
                )
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut  # release() hands its slot over: _inflight already counts us
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release_slot()  # we were handed a slot but are leaving
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(fut)
                raise
        pacer = self.pacer
        if pacer.engaged:
            try:
                ticket = await self._pace(tokens)
            except BaseException:
                self._release_slot()
                raise
            self._starts.append(self._clock())
            return ticket
        now = self._clock()  # no budget known: nothing to wait for (the hot path)
        self._starts.append(now)
        return pacer.charge(tokens, now)

    def release(self) -> None:
        if self._starts:
            held = self._clock() - self._starts.popleft()
            self._avg_hold_s = held if not self._avg_hold_s else 0.9 * self._avg_hold_s + 0.1 * held
        self._release_slot()

    def _release_slot(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to the next waiter
                return
        self._inflight -= 1

    async def _pace(self, tokens: float) -> Ticket:
        """Wait until the budgets hold this request (behind those already waiting); charge it."""
        pacer = self.pacer
        wait, reservation = pacer.reserve(tokens, self._clock())
        if wait <= 0:
            return pacer.send(reservation)
        if self.waiting >= self.max_queue:
            pacer.drop(reservation)
            raise Busy(
                f"rate limit reached upstream: the next send is {wait:.3f}s away and {self.waiting} "
                f"callers wait (max_queue={self.max_queue})",
                retry_after_s=self.retry_after_estimate(),
            )
        self._pausing += 1
        try:
            await self._wait_out(wait, reservation)
        except BaseException:
            pacer.drop(reservation)
            raise
        finally:
            self._pausing -= 1
        return pacer.send(reservation)

    async def _wait_out(self, wait: float, reservation: Reservation) -> None:
        # Sleep, then look again: newer answers may have moved the estimate. Only a sleep that
        # moved the clock is repeated, so an injected sleep that does not cannot spin here.
        while wait > 0:
            before = self._clock()
            await self._sleep(wait)
            if self._clock() - before < 0.5 * wait:
                return
            wait = self.pacer.recheck(reservation, self._clock())

    # -- rate-limit headers --------------------------------------------------------------
    def observe_headers(
        self, headers: Mapping[str, str], *, status: int = 200, ticket: Ticket | None = None
    ) -> None:
        """Learn the endpoint's rate-limit budgets from one answer (``ticket``: its request's)."""
        self.pacer.observe(headers, status=status, ticket=ticket)

    def block_for(self, seconds: float) -> None:
        """Hold new sends back for ``seconds`` (extends, never shortens, a running block)."""
        self.pacer.block_for(seconds)

    # -- context manager -----------------------------------------------------------------
    def slot(self) -> Throttle:
        return self

    async def __aenter__(self) -> Throttle:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
