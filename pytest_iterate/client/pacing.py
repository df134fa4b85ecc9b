"""Rate-limit pacing: spend an endpoint's request and token budgets at their refill rate.

OpenAI-compatible endpoints describe each budget on every answer::

    x-ratelimit-limit-requests / -tokens       the budget's size (per minute)
    x-ratelimit-remaining-requests / -tokens   what is left, this request charged
    x-ratelimit-reset-requests / -tokens       time until the budget is full again ("6m0s", "1s", "120ms")

A :class:`RatePacer` keeps one :class:`Budget` per dimension (``requests``: 1 unit a
request; ``tokens``: the prompt's tokens plus ``max_tokens``, as the endpoint charges).
A budget is a model of the endpoint's bucket, re-anchored on every answer:

* **level**: the last answer's ``remaining``, plus what refilled since the answer
  arrived, minus the units sent after its request was sent. The endpoint took its
  snapshot somewhere between the send and the arrival: counting the refill from the
  arrival and the charges from the send errs on the safe side at both ends, however
  long the request waited on the way (a loaded machine, a queue in front of the
  endpoint). Answers come back out of order; each one is placed by its own send.
* **rate**: a bucket that refills continuously to ``limit`` in ``reset`` seconds from
  ``remaining`` refills at ``(limit - remaining) / reset`` units a second. ``remaining``
  is a whole number (the true level lies in ``[remaining, remaining + 1)``), so each
  answer bounds the rate to ``[(limit - remaining - 1) / reset, (limit - remaining) /
  reset]``; the budget keeps the tightest lower bound (the rate it paces at never
  exceeds the true one) and restarts when an answer contradicts the bounds (the limit
  changed).
* **not_before**: a 429 that reports a spent budget holds that budget back for its
  ``Retry-After`` (``retry-after-ms`` first). A 429 without rate-limit headers delays
  only its own retry (see :mod:`.retry`). An endpoint that sends ``remaining`` and
  ``reset`` but no ``limit`` gives no rate: at ``remaining <= floor`` the budget waits
  out the whole reset, as it says.

A caller asks :meth:`RatePacer.reserve` for its units: the wait until the budget holds
them after the units of every caller already waiting (so N waiting callers leave one
refill interval apart instead of together), plus jitter: a random share (``jitter``,
default 10 %) of the time one caller's units take to refill, so callers in several
processes drift apart. After the wait it asks :meth:`RatePacer.recheck` (the estimate may
have moved with newer answers) and, once clear, :meth:`RatePacer.send` charges the units
and returns the :class:`Ticket` that anchors its answer.

Before the first answer nothing is known and nothing waits.

>>> p = RatePacer(clock=lambda: 0.0, jitter=0.0)
>>> wait, reservation = p.reserve(0, now=0.0)
>>> ticket = p.send(reservation, now=0.0)
>>> p.observe({"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
...            "x-ratelimit-reset-requests": "59.5s"}, ticket=ticket, now=0.0)
>>> round(p.requests.rate, 4), round(p.reserve(0, now=0.0)[0], 3)    # 59/59.5 a second, a unit away
(0.9916, 1.008)
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from pytest_iterate.client.retry import parse_retry_after

__all__ = [
    "Budget",
    "RatePacer",
    "Reservation",
    "Ticket",
    "estimate_tokens",
    "parse_reset_duration",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_CHARS_PER_TOKEN = 4  # OpenAI's own estimate for rate limiting, used without a tokenizer
_REMAINING_REQUESTS = "x-ratelimit-remaining-requests"
_REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
_HEADERS = {
    name: (f"x-ratelimit-limit-{name}", f"x-ratelimit-reset-{name}") for name in ("requests", "tokens")
}


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
        return value if value >= 0 and math.isfinite(value) else None
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


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def estimate_tokens(request: Any) -> int:
    """Tokens an endpoint charges a request, without a tokenizer: characters / 4 of the
    prompt plus ``max_tokens`` per prompt (OpenAI's estimate). The pipeline replaces it
    with the token guard's count."""
    prompt = getattr(request, "prompt", None)
    if prompt is not None:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        chars = sum(len(p) for p in prompts)
        n = max(1, len(prompts))
    else:
        chars = sum(len(str(m.get("content", ""))) for m in getattr(request, "messages", ()))
        n = 1
    max_tokens = getattr(request, "max_tokens", None) or 0
    return math.ceil(chars / _CHARS_PER_TOKEN) + max_tokens * n


class Ticket:
    """One request's charge: when it was sent and the budgets' counters before it."""

    __slots__ = ("requests_before", "sent_s", "tokens", "tokens_before")

    def __init__(self, sent_s: float, requests_before: float, tokens_before: float, tokens: float) -> None:
        self.sent_s = sent_s
        self.requests_before = requests_before
        self.tokens_before = tokens_before
        self.tokens = tokens


class Reservation:
    """Units a caller waits for (counted as pending by the budgets until sent or dropped)."""

    __slots__ = ("active", "tokens")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.active = True


class Budget:
    """The model of one of the endpoint's buckets (``requests`` or ``tokens``).

    ``level(now)`` is the estimate of what the endpoint has left (None before any
    answer), ``rate`` the refill rate in units a second (None while unknown).
    """

    __slots__ = (
        "anchor_level",
        "anchor_s",
        "anchor_seen_s",
        "anchor_sent",
        "floor",
        "hi",
        "limit",
        "lo",
        "name",
        "not_before",
        "pending",
        "sent",
    )

    def __init__(self, name: str, *, floor: float = 0.0) -> None:
        self.name = name
        self.floor = floor
        self.limit: float | None = None
        self.lo = 0.0  # tightest lower bound of the refill rate seen so far
        self.hi = math.inf  # tightest upper bound
        self.anchor_s: float | None = None  # when the anchoring answer's request was sent
        self.anchor_seen_s = 0.0  # when that answer arrived: the refill counts from here
        self.anchor_level = 0.0
        self.anchor_sent = 0.0
        self.sent = 0.0  # units sent, cumulative
        self.pending = 0.0  # units reserved by callers still waiting
        self.not_before = 0.0

    def __repr__(self) -> str:
        return (
            f"Budget({self.name!r}, limit={self.limit}, rate={self.rate}, "
            f"level@anchor={self.anchor_level if self.anchor_s is not None else None})"
        )

    @property
    def rate(self) -> float | None:
        """Units a second the budget refills at (a lower bound), or None while unknown."""
        if self.lo > 0:
            return self.lo
        return self.hi if math.isfinite(self.hi) else None

    @property
    def known(self) -> bool:
        """Whether the endpoint has described this budget at all."""
        return self.anchor_s is not None or self.not_before > 0

    def level(self, now: float) -> float | None:
        """Units the endpoint has left now (estimate), or None before the first answer."""
        if self.anchor_s is None:
            return None
        level = self.anchor_level
        rate = self.rate
        if rate is not None:
            level += rate * max(0.0, now - self.anchor_seen_s)
            if self.limit is not None:
                level = min(self.limit, level)
        return level - (self.sent - self.anchor_sent)

    def wait_s(self, units: float, now: float, *, ahead: float = 0.0) -> float:
        """Seconds until ``units`` (after ``ahead`` units of callers before it) are there."""
        wait = max(0.0, self.not_before - now)
        level = self.level(now)
        if level is None or units <= 0:
            return wait
        if self.limit is not None:
            units = min(units, self.limit)  # a request larger than the bucket waits for a full one
        short = ahead + units - (level - self.floor)
        rate = self.rate
        if short > 1e-9 and rate is not None:
            wait = max(wait, short / rate)
        return wait

    def observe(
        self,
        limit: float | None,
        remaining: float | None,
        reset_s: float | None,
        *,
        sent_s: float,
        sent_mark: float,
        now: float,
    ) -> None:
        """Learn from one answer: ``remaining`` as of ``sent_s``, after ``sent_mark`` units sent."""
        if limit is not None and limit > 0 and limit != self.limit:
            self.limit = limit
            self.lo, self.hi = 0.0, math.inf
        if remaining is None:
            return
        if self.limit is not None and reset_s is not None and reset_s > 0:
            used = self.limit - remaining
            if used >= 1:
                lo, hi = (used - 1) / reset_s, used / reset_s
                if lo > self.hi or hi < self.lo:  # the endpoint changed its rate: start again
                    self.lo, self.hi = lo, hi
                else:
                    self.lo, self.hi = max(self.lo, lo), min(self.hi, hi)
        elif self.limit is None and reset_s and remaining <= self.floor:
            # no limit, so no rate: wait out the whole reset the endpoint names
            self.not_before = max(self.not_before, sent_s + reset_s)
        anchor = (sent_s, now, remaining, sent_mark)
        if self._better_anchor(anchor, now):
            self.anchor_s, self.anchor_seen_s, self.anchor_level, self.anchor_sent = anchor

    def _better_anchor(self, anchor: tuple[float, float, float, float], now: float) -> bool:
        if self.anchor_s is None or anchor[0] >= self.anchor_s:
            return True
        current = self.level(now)
        saved = (self.anchor_s, self.anchor_seen_s, self.anchor_level, self.anchor_sent)
        self.anchor_s, self.anchor_seen_s, self.anchor_level, self.anchor_sent = anchor
        older = self.level(now)
        self.anchor_s, self.anchor_seen_s, self.anchor_level, self.anchor_sent = saved
        # an older answer wins only when it says less is left (it counts a charge we missed)
        return current is None or (older is not None and older < current)


class RatePacer:
    """Budgets for requests and tokens, paced at their refill rate (see the module doc).

    ``floor`` keeps that many units of each budget unspent; ``jitter`` is the share of
    one caller's refill time added at random to every wait; ``rng`` and ``clock`` are
    injectable.
    """

    __slots__ = ("_clock", "engaged", "jitter", "requests", "rng", "tokens")

    def __init__(
        self,
        *,
        floor: float = 0.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter={jitter!r} must be between 0 and 1")
        self.requests = Budget("requests", floor=floor)
        self.tokens = Budget("tokens", floor=floor)
        self.jitter = jitter
        self.rng = rng if rng is not None else random.Random()
        self._clock = clock
        self.engaged = False  # whether any budget was described or blocked: else nobody waits

    @property
    def paces_tokens(self) -> bool:
        """Whether the endpoint has described a token budget (only then are tokens counted)."""
        return self.tokens.known

    def wait_s(self, tokens: float = 0.0, now: float | None = None) -> float:
        """How long a new request of ``tokens`` would wait, behind every caller waiting now."""
        now = self._clock() if now is None else now
        return max(
            self.requests.wait_s(1, now, ahead=self.requests.pending),
            self.tokens.wait_s(tokens, now, ahead=self.tokens.pending),
        )

    def reserve(self, tokens: float, now: float) -> tuple[float, Reservation]:
        """Queue a request of ``tokens``: its wait (jitter included) and its reservation."""
        wait = self.wait_s(tokens, now)
        reservation = Reservation(tokens)
        self.requests.pending += 1
        self.tokens.pending += tokens
        return (wait + self._jitter(tokens, wait) if wait > 0 else 0.0), reservation

    def recheck(self, reservation: Reservation, now: float) -> float:
        """After a wait: how much longer, now that newer answers may have moved the estimate."""
        wait = max(
            self.requests.wait_s(1, now),
            self.tokens.wait_s(reservation.tokens, now),
        )
        return wait + self._jitter(reservation.tokens, wait) if wait > 0 else 0.0

    def drop(self, reservation: Reservation) -> None:
        """A waiting caller left (cancelled, or turned away): forget its units."""
        if reservation.active:
            reservation.active = False
            self.requests.pending -= 1
            self.tokens.pending -= reservation.tokens

    def send(self, reservation: Reservation, now: float | None = None) -> Ticket:
        """Charge the reservation's units as sent now; the ticket anchors its answer."""
        now = self._clock() if now is None else now
        self.drop(reservation)
        ticket = Ticket(now, self.requests.sent, self.tokens.sent, reservation.tokens)
        self.requests.sent += 1
        self.tokens.sent += reservation.tokens
        return ticket

    def observe(
        self,
        headers: Mapping[str, str],
        *,
        status: int = 200,
        ticket: Ticket | None = None,
        now: float | None = None,
    ) -> None:
        """Learn from one answer's headers (its ``status``; the ``ticket`` of its request)."""
        get = headers.get
        requests_left, tokens_left = get(_REMAINING_REQUESTS), get(_REMAINING_TOKENS)
        if requests_left is None and tokens_left is None:
            return  # an endpoint without rate-limit headers (the hot path: two lookups)
        self.engaged = True
        now = self._clock() if now is None else now
        rejected = status == 429
        sent_s = ticket.sent_s if ticket is not None else now
        for budget, raw, units, before in (
            (self.requests, requests_left, 1.0, ticket.requests_before if ticket else self.requests.sent),
            (
                self.tokens,
                tokens_left,
                ticket.tokens if ticket else 0.0,
                ticket.tokens_before if ticket else None,
            ),
        ):
            if raw is None:
                continue
            remaining = _number(raw)
            if before is None:
                before = budget.sent
            names = _HEADERS[budget.name]
            budget.observe(
                _number(get(names[0])),
                remaining,
                parse_reset_duration(get(names[1])),
                sent_s=sent_s,
                # a refused request was not charged: its answer counts the units before it
                sent_mark=before if rejected or ticket is None else before + units,
                now=now,
            )
            if rejected and remaining is not None and remaining - budget.floor < max(units, 1.0):
                after = parse_retry_after(headers)
                if after is not None:
                    budget.not_before = max(budget.not_before, now + after)

    def charge(self, tokens: float, now: float) -> Ticket:
        """Count a request sent without waiting (nothing known yet): its ticket."""
        ticket = Ticket(now, self.requests.sent, self.tokens.sent, tokens)
        self.requests.sent += 1
        self.tokens.sent += tokens
        return ticket

    def block_for(self, seconds: float, now: float | None = None) -> None:
        """Hold every new send back for ``seconds`` (extends, never shortens, a running block)."""
        now = self._clock() if now is None else now
        self.requests.not_before = max(self.requests.not_before, now + seconds)
        self.engaged = True

    def _jitter(self, tokens: float, wait: float) -> float:
        """A random share of the time one caller's units take to refill (of the wait itself
        while no rate is known), so callers waiting out the same block do not all leave at once."""
        if not self.jitter:
            return 0.0
        spans = [1.0 / r for r in (self.requests.rate,) if r]
        rate = self.tokens.rate
        if rate and tokens:
            spans.append(tokens / rate)
        span = max(spans, default=wait)
        return self.rng.uniform(0.0, self.jitter * span)
