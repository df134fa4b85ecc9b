"""Token buckets for requests/min and tokens/min with OpenAI's rate-limit headers.

Each bucket holds up to ``limit`` units and refills continuously at ``limit / 60`` per
second. A request takes 1 request unit and ``prompt_tokens + max_tokens`` token units
(OpenAI's estimate; ``max_tokens`` once per answer asked for, so a list of 8 prompts
is charged 8 times its ``max_tokens``). Every answer carries::

    x-ratelimit-limit-requests / -tokens        the per-minute limits
    x-ratelimit-remaining-requests / -tokens    what is left after this request
    x-ratelimit-reset-requests / -tokens        time until the bucket is full ("6m0s", "1s", "12ms")

Over a limit, :meth:`RateLimiter.take` returns ``allowed=False`` and the seconds until
enough units are back, for a 429 with ``Retry-After``; the refused request is not
charged. A request larger than a whole bucket is let through once the bucket is full
(the level goes below zero and the next requests wait longer).

A bucket can start partly spent (``used_requests``/``used_tokens``): a key that
another job has been using.

>>> rl = RateLimiter(requests_per_min=60, clock=lambda: 0.0)
>>> d = rl.take(10)
>>> d.allowed, d.headers["x-ratelimit-remaining-requests"], d.headers["x-ratelimit-reset-requests"]
(True, '59', '1s')
>>> format_reset(372.0), format_reset(0.012), format_reset(59.9999), format_reset(0.9999)
('6m12s', '12ms', '1m0s', '1s')
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_iterate.client.errors import ConfigError

__all__ = ["RateDecision", "RateLimiter", "TokenBucket", "format_reset"]


def format_reset(seconds: float) -> str:
    """OpenAI's duration style: ``"6m0s"``, ``"1.5s"``, ``"12ms"``, ``"0s"`` (milliseconds,
    rounded up, so it never promises a unit back early)."""
    if seconds <= 0:
        return "0s"
    ms = math.ceil(round(seconds * 1000, 6))
    if ms < 1000:
        return f"{max(1, ms)}ms"
    minutes, secs = divmod(ms / 1000.0, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    secs_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs_text}s"


class TokenBucket:
    """``limit`` units per minute, refilled continuously; starts full."""

    def __init__(self, limit_per_min: float, clock: Callable[[], float]) -> None:
        if limit_per_min <= 0:
            raise ConfigError(f"rate limit must be > 0 per minute, got {limit_per_min!r}")
        self.limit = float(limit_per_min)
        self.rate = self.limit / 60.0
        self._clock = clock
        self._level = self.limit
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.limit, self._level + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, units: float) -> float:
        """Seconds until ``units`` are available (0 if they are now)."""
        self._refill()
        missing = min(units, self.limit) - self._level
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, units: float) -> None:
        self._refill()
        self._level -= units

    @property
    def remaining(self) -> int:
        self._refill()
        return max(0, int(self._level))

    @property
    def reset_s(self) -> float:
        self._refill()
        return (self.limit - self._level) / self.rate


@dataclass(frozen=True, slots=True)
class RateDecision:
    """What :meth:`RateLimiter.take` decided; ``limit``/``remaining`` of the exceeded budget."""

    allowed: bool
    retry_after_s: float
    headers: dict[str, str]
    exceeded: str | None = None  # "requests" or "tokens"
    limit: int = 0
    remaining: int = 0


class RateLimiter:
    """Requests/min and tokens/min buckets (either may be None: unlimited)."""

    def __init__(
        self,
        requests_per_min: float | None = None,
        tokens_per_min: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        used_requests: float = 0.0,
        used_tokens: float = 0.0,
    ) -> None:
        self.requests = TokenBucket(requests_per_min, clock) if requests_per_min else None
        self.tokens = TokenBucket(tokens_per_min, clock) if tokens_per_min else None
        for bucket, used, name in (
            (self.requests, used_requests, "used_requests"),
            (self.tokens, used_tokens, "used_tokens"),
        ):
            if not (math.isfinite(used) and 0 <= used <= (bucket.limit if bucket else 0)):
                bound = f"between 0 and the limit ({bucket.limit:g})" if bucket else "0 without that limit"
                raise ConfigError(f"{name}={used!r} is out of range; give a number {bound}")
            if bucket is not None and used:
                bucket.take(used)

    def take(self, tokens: int) -> RateDecision:
        """Charge one request of ``tokens`` tokens, or refuse it without charging."""
        waits: list[tuple[float, str]] = []
        if self.requests is not None:
            waits.append((self.requests.wait_for(1), "requests"))
        if self.tokens is not None:
            waits.append((self.tokens.wait_for(tokens), "tokens"))
        worst = max(waits, default=(0.0, ""))
        allowed = worst[0] <= 0
        if allowed:
            if self.requests is not None:
                self.requests.take(1)
            if self.tokens is not None:
                self.tokens.take(tokens)
            return RateDecision(True, 0.0, self.headers())
        bucket = self.requests if worst[1] == "requests" else self.tokens
        assert bucket is not None
        return RateDecision(False, worst[0], self.headers(), worst[1], int(bucket.limit), bucket.remaining)

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            out[f"x-ratelimit-limit-{name}"] = str(int(bucket.limit))
            out[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining)
            out[f"x-ratelimit-reset-{name}"] = format_reset(bucket.reset_s)
        return out
