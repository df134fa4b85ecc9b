"""Client-side throttle: a concurrency limit, rate-limit-header slowdown, fast Busy.

``async with throttle:`` (or ``async with throttle.slot():``) holds one of
``max_concurrent`` slots for the duration of one attempt. Callers that find every
slot taken wait in FIFO order; when ``max_queue`` callers are already waiting, a new
caller gets :class:`~pytest_iterate.client.errors.Busy` at once (no await, so well
under a millisecond) carrying an estimate of when to come back, instead of a hang.

Adaptive slowdown: :meth:`Throttle.observe_headers` reads
``x-ratelimit-remaining-requests`` / ``-tokens``; when one is at or below
``remaining_floor`` (0 by default) new sends wait until the matching
``x-ratelimit-reset-requests`` / ``-tokens`` (``"6m0s"``, ``"12ms"``, ``"1s"``,
``"0.5s"``; see :func:`parse_reset_duration`) has passed. The waiting counts as
queueing (``iterate_queue_depth``) and against ``max_queue``.

``iterate_inflight_requests`` and ``iterate_queue_depth`` are read from the throttle
when the registry is collected (``Gauge.set_function``), so the hot path does no
metric work; one throttle reports per :class:`IterateMetrics` (the last one made).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_iterate.client.errors import Busy

if TYPE_CHECKING:
    from pytest_iterate.client.metrics import IterateMetrics

__all__ = ["Throttle", "parse_reset_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_RATE_HEADERS = (
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
)
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_reset_duration(text: str | None) -> float | None:
    """Seconds in a rate-limit reset value such as ``"6m0s"``, ``"12ms"`` or ``"0.5s"``.

    A bare number is seconds. Anything else gives None.

    >>> [parse_reset_duration(v) for v in ("6m0s", "12ms", "1s", "0.5s", "1h2m3s", "7", "soon")]
    [360.0, 0.012, 1.0, 0.5, 3723.0, 7.0, None]
    """
    if not text:
        return None
    text = text.strip()
    try:
        value = float(text)
        return value if value >= 0 else None
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        return None
    return round(total, 9)


class Throttle:
    """At most ``max_concurrent`` holders, at most ``max_queue`` waiters, then ``Busy``."""

    __slots__ = (
        "_avg_hold_s",
        "_blocked_until",
        "_clock",
        "_inflight",
        "_pausing",
        "_sleep",
        "_starts",
        "_waiters",
        "max_concurrent",
        "max_queue",
        "metrics",
        "remaining_floor",
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
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent={max_concurrent!r} must be >= 1")
        if max_queue < 0:
            raise ValueError(f"max_queue={max_queue!r} must be >= 0")
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.remaining_floor = remaining_floor
        self.metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._pausing = 0  # callers sleeping out a rate-limit reset
        self._blocked_until = 0.0
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
        return len(self._waiters) + self._pausing

    @property
    def blocked_for_s(self) -> float:
        """Seconds left until the rate-limit reset the throttle is waiting for (0 if none)."""
        return max(0.0, self._blocked_until - self._clock())

    def retry_after_estimate(self) -> float:
        """When a caller turned away now could expect a free slot, in seconds."""
        hold = self._avg_hold_s or 0.05
        rounds = (self.waiting + 1) / self.max_concurrent
        return round(self.blocked_for_s + max(rounds * hold, 0.001), 4)

    # -- acquire/release -----------------------------------------------------------------
    async def acquire(self) -> None:
        """Take a slot, waiting in line; raise Busy when the line is full."""
        if self._blocked_until:
            await self._pause()
        if self._inflight < self.max_concurrent and not self._waiters:
            self._inflight += 1
            self._starts.append(self._clock())
            return
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
        self._starts.append(self._clock())

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

    async def _pause(self) -> None:
        delay = self._blocked_until - self._clock()
        if delay <= 0:
            self._blocked_until = 0.0
            return
        if self.waiting >= self.max_queue:
            raise Busy(
                f"rate limit reached upstream; resets in {delay:.3f}s and {self.waiting} callers wait",
                retry_after_s=self.retry_after_estimate(),
            )
        self._pausing += 1
        try:
            # Sleep out the block; loop again only when it was extended meanwhile, so an
            # injected sleep that does not move the clock cannot spin here.
            while (delay := (until := self._blocked_until) - self._clock()) > 0:
                await self._sleep(delay)
                if self._blocked_until <= until:
                    break
        finally:
            self._pausing -= 1

    # -- rate-limit headers --------------------------------------------------------------
    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Slow down when the endpoint says the request or token budget is (nearly) spent."""
        for remaining_key, reset_key in _RATE_HEADERS:
            remaining = headers.get(remaining_key)
            if remaining is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            if left <= self.remaining_floor:
                reset = parse_reset_duration(headers.get(reset_key))
                if reset:
                    self.block_for(reset)

    def block_for(self, seconds: float) -> None:
        """Hold new sends back for ``seconds`` (extends, never shortens, a running block)."""
        until = self._clock() + seconds
        if until > self._blocked_until:
            self._blocked_until = until

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
