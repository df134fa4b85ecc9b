"""Retry policy: which failures retry, how long to wait, how many attempts.

Built from tenacity strategy objects (:class:`RetryIfTransient`,
:class:`WaitRetryAfterOrBackoff`, ``stop_after_attempt``) driven by
``tenacity.AsyncRetrying``. :class:`RetryingCaller` wraps any
:class:`~pytest_iterate.client.types.Caller`.

Only what can succeed on a retry is retried (:func:`retry_reason` gives the metric label):

* the HTTP statuses of :data:`RETRY_STATUSES`, the one table that decides them:

  ======  ============  =====================================================
  status  label         why a retry can succeed
  ======  ============  =====================================================
  408     ``timeout``   the server timed out waiting for the request
  409     ``409``       a conflicting concurrent change, gone on the next try
  425     ``425``       too early (a replayed TLS early-data request)
  429     ``429``       rate limited: wait (Retry-After) and try again
  500     ``5xx``       an internal error, often transient
  502     ``5xx``       bad gateway: the upstream hiccuped
  503     ``5xx``       unavailable / overloaded
  504     ``5xx``       gateway timeout
  529     ``5xx``       overloaded (used by some LLM providers)
  ======  ============  =====================================================

* ``RequestTimeout`` -> ``"timeout"``; ``ConnectError`` (refused, reset) -> ``"connect"``;
* ``BadResponse`` whose ``retryable`` is true -> ``"bad_response"``: every
  ``StreamError`` (a stream cut before ``[DONE]``, an error event inside a stream,
  stream data that is not JSON) and a 2xx body that is not JSON at all (malformed,
  truncated, an HTML page). A well-formed JSON answer of the wrong shape (no
  ``choices``, a missing field) is not retried: it would come back the same.

Never retried, failing at once: every other status (400, 401, 403, 404, 422, 501 not
implemented, 505 HTTP version not supported, ...), ``Busy``, ``ConfigError``,
``ContextOverflow``.

Waiting: ``retry-after-ms`` first, then ``Retry-After`` (seconds or an HTTP date),
capped at ``retry_after_cap_s``; otherwise exponential backoff with full jitter,
``uniform(0, min(backoff_max_s, backoff_initial_s * 2 ** (attempt - 1)))``.
After the last attempt the last mapped error is raised (never ``tenacity.RetryError``).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import tenacity
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt
from tenacity.retry import retry_base
from tenacity.wait import wait_base

from pytest_iterate.client.errors import BadResponse, ConnectError, HTTPStatusError, RequestTimeout
from pytest_iterate.client.types import LLMRequest, LLMResponse

if TYPE_CHECKING:
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.metrics import IterateMetrics

__all__ = [
    "RETRY_STATUSES",
    "RetryIfTransient",
    "RetryPolicy",
    "RetryingCaller",
    "WaitRetryAfterOrBackoff",
    "parse_retry_after",
    "retry_reason",
]

Sleep = Callable[[float], Awaitable[Any]]
OnDelta = Callable[[str], None]
Attempt = Callable[..., Awaitable[LLMResponse]]  # a Caller, maybe taking more keywords

RETRY_STATUSES: Mapping[int, str] = MappingProxyType(
    {
        408: "timeout",
        409: "409",
        425: "425",
        429: "429",
        500: "5xx",
        502: "5xx",
        503: "5xx",
        504: "5xx",
        529: "5xx",
    }
)
"""The HTTP statuses that are retried, each with its ``iterate_retries_total`` reason label."""


def retry_reason(exc: BaseException | None) -> str | None:
    """The low-cardinality reason label when ``exc`` should be retried, else None."""
    if isinstance(exc, HTTPStatusError):
        return RETRY_STATUSES.get(exc.status)
    if isinstance(exc, RequestTimeout):
        return "timeout"
    if isinstance(exc, ConnectError):
        return "connect"
    if isinstance(exc, BadResponse):
        return "bad_response" if exc.retryable else None
    return None


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date).

    ``headers`` should do case-insensitive lookups (aiohttp's and httpx's do); for a
    plain dict the lower-case and the canonical spelling are tried.
    Unparseable or negative values give None; a date in the past gives 0.

    >>> parse_retry_after({"retry-after-ms": "1500"})
    1.5
    >>> parse_retry_after({"Retry-After": "2"})
    2.0
    >>> parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=lambda: 1445412470.0)
    10.0
    """
    ms = headers.get("retry-after-ms") or headers.get("Retry-After-Ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after") or headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return value if value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts and how long to wait; built from the config."""

    max_attempts: int = 3
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 8.0
    retry_after_cap_s: float = 30.0

    @classmethod
    def from_config(cls, config: IterateConfig) -> RetryPolicy:
        return cls(
            max_attempts=config.max_attempts,
            backoff_initial_s=config.backoff_initial_s,
            backoff_max_s=config.backoff_max_s,
            retry_after_cap_s=config.retry_after_cap_s,
        )

    def wait_s(self, attempt: int, exc: BaseException | None, rng: random.Random) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        after = getattr(exc, "retry_after_s", None)
        if after is not None:
            return float(min(after, self.retry_after_cap_s))
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


class RetryIfTransient(retry_base):
    """tenacity retry strategy: retry exactly when :func:`retry_reason` gives a reason."""

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        return retry_reason(outcome.exception()) is not None


class WaitRetryAfterOrBackoff(wait_base):
    """tenacity wait strategy: the server's retry-after (capped), else jittered backoff."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        return self.policy.wait_s(retry_state.attempt_number, exc, self.rng)


class _DeltaTracker:
    """Passes deltas on to the consumer and remembers whether any arrived."""

    __slots__ = ("on_delta", "seen")

    def __init__(self, on_delta: OnDelta) -> None:
        self.on_delta = on_delta
        self.seen = False

    def __call__(self, delta: str) -> None:
        self.seen = True
        self.on_delta(delta)


class RetryingCaller:
    """A Caller that retries ``inner`` by the policy and records attempts and retries.

    Keyword arguments other than ``on_delta`` are handed unchanged to every attempt of
    the call (the client passes the logical request's id this way, so its retries
    carry the same one).

    The first attempt runs outside tenacity, so a success costs one ``await`` and no
    retry machinery. On a retryable failure, ``AsyncRetrying`` takes over; it replays
    that first failure as its attempt 1, so its state (attempt numbers, waits, stop)
    is exactly that of a loop run by tenacity from the start.

    A streamed attempt that already handed text to ``on_delta`` is not retried (the
    consumer has seen part of an answer that a retry could not continue); its error
    is raised.
    """

    __slots__ = ("_retry", "_retry_counters", "_wait", "inner", "metrics", "policy", "rng", "sleep")

    def __init__(
        self,
        inner: Attempt,
        policy: RetryPolicy,
        *,
        metrics: IterateMetrics | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy
        self.metrics = metrics
        self.sleep = sleep
        self.rng = rng if rng is not None else random.Random()
        self._retry = RetryIfTransient()
        self._wait = WaitRetryAfterOrBackoff(policy, self.rng)
        self._retry_counters: dict[str, Any] = {}

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: OnDelta | None = None, **attempt_kwargs: Any
    ) -> LLMResponse:
        tracked = _DeltaTracker(on_delta) if on_delta is not None else None
        try:
            response = await self.inner(request, on_delta=tracked, **attempt_kwargs)
        except Exception as first:
            seen = tracked is not None and tracked.seen
            if self.policy.max_attempts <= 1 or seen or retry_reason(first) is None:
                raise
            return await self._retry_after(first, request, on_delta=tracked, attempt_kwargs=attempt_kwargs)
        response.attempts = 1
        return response

    async def _retry_after(
        self,
        first: BaseException,
        request: LLMRequest,
        *,
        on_delta: _DeltaTracker | None,
        attempt_kwargs: Mapping[str, Any],
    ) -> LLMResponse:
        def retry_unless_seen(state: RetryCallState) -> bool:
            return not (on_delta is not None and on_delta.seen) and self._retry(state)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            retry=retry_unless_seen,
            sleep=self.sleep,
            before_sleep=self._count,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    if number == 1:
                        raise first
                    response = await self.inner(request, on_delta=on_delta, **attempt_kwargs)
                    response.attempts = number
                    return response
        except tenacity.RetryError as exc:  # only without reraise; kept as a guard
            last = exc.last_attempt.exception()
            if last is not None:
                raise last from None
            raise
        raise AssertionError("unreachable: tenacity ended without a result")  # pragma: no cover

    def _count(self, state: RetryCallState) -> None:
        outcome = state.outcome
        if self.metrics is None or outcome is None or not outcome.failed:
            return
        reason = retry_reason(outcome.exception()) or "other"
        counter = self._retry_counters.get(reason)
        if counter is None:
            counter = self._retry_counters[reason] = self.metrics.retries.labels(reason)
        counter.inc()
