"""Faults the mock endpoint injects: by rate and by script, reproducible from a seed.

Kinds (:data:`FAULT_KINDS`):

    429              HTTP 429 with ``Retry-After: <seconds>`` (integer, rounded up)
    429ms            HTTP 429 with ``retry-after-ms: <milliseconds>``
    500 502 503 529  server errors with an OpenAI-shaped error body
    hang             no answer at all, for ``hang_s`` (past any client timeout)
    reset            the connection is reset before any byte of the answer
    malformed_json   200 with a body (or a stream event) that is not JSON
    stream_cut       a stream that stops before ``[DONE]`` (non-streamed: a body cut short)
    stream_error     an ``error`` event inside the stream (non-streamed: HTTP 500)
    empty_choices    200 with ``"choices": []``

The automatic ``400 context_length_exceeded`` is not a planned fault: the core
answers it whenever prompt + max_tokens exceed the profile's window.

Which request gets a fault: a script entry for its 1-based index wins; otherwise one
uniform draw from the request's own RNG (see :mod:`.core`) is compared with the
cumulative rates in :data:`FAULT_KINDS` order, so a seed fixes the whole sequence.

>>> plan = FaultPlan.parse(["429=0.02", "503=0.01", "3:reset"])
>>> plan.rates["429"], plan.script[3]
(0.02, 'reset')
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pytest_iterate.client.errors import ConfigError

__all__ = ["FAULT_KINDS", "FaultPlan", "parse_fault"]

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429ms",
    "500",
    "502",
    "503",
    "529",
    "hang",
    "reset",
    "malformed_json",
    "stream_cut",
    "stream_error",
    "empty_choices",
)


def _check_kind(kind: str) -> str:
    kind = kind.strip()
    if kind not in FAULT_KINDS:
        raise ConfigError(f"unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
    return kind


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Rates (``{"429": 0.02}``, each in [0, 1], summing to <= 1) and a script (``{5: "hang"}``).

    ``retry_after_s`` is what 429s ask the client to wait; ``hang_s`` how long a hang lasts.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    script: Mapping[int, str] = field(default_factory=dict)
    retry_after_s: float = 1.0
    hang_s: float = 3600.0

    def __post_init__(self) -> None:
        total = 0.0
        for kind, rate in self.rates.items():
            _check_kind(kind)
            if not 0.0 <= float(rate) <= 1.0:
                raise ConfigError(f"fault rate {kind}={rate!r} must be between 0 and 1")
            total += float(rate)
        if total > 1.0 + 1e-9:
            raise ConfigError(f"fault rates add up to {total:g}, more than 1")
        for index, kind in self.script.items():
            _check_kind(kind)
            if int(index) < 1:
                raise ConfigError(f"scripted fault index {index!r} must be >= 1 (the nth request, from 1)")
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ConfigError("retry_after_s and hang_s must be >= 0")

    @classmethod
    def parse(cls, specs: Iterable[str], **kwargs: float) -> FaultPlan:
        """Build a plan from CLI strings: ``"429=0.02"`` (rate) or ``"5:hang"`` (script)."""
        rates: dict[str, float] = {}
        script: dict[int, str] = {}
        for spec in specs:
            kind, value = parse_fault(spec)
            if isinstance(value, int):
                script[value] = kind
            else:
                rates[kind] = rates.get(kind, 0.0) + value
        return cls(rates=rates, script=script, **kwargs)

    @property
    def empty(self) -> bool:
        return not self.script and not any(self.rates.values())

    def pick(self, index: int, rng: random.Random) -> str | None:
        """The fault of the ``index``-th request (1-based), or None. Draws exactly one number."""
        u = rng.random()
        scripted = self.script.get(index)
        if scripted is not None:
            return scripted
        acc = 0.0
        for kind in FAULT_KINDS:
            rate = self.rates.get(kind)
            if rate:
                acc += rate
                if u < acc:
                    return kind
        return None


def parse_fault(spec: str) -> tuple[str, float | int]:
    """``"429=0.02"`` -> ``("429", 0.02)``; ``"5:hang"`` -> ``("hang", 5)``; else ConfigError."""
    text = spec.strip()
    if "=" in text:
        kind, _, raw = text.partition("=")
        kind = _check_kind(kind)
        try:
            rate = float(raw)
        except ValueError:
            raise ConfigError(f"fault {spec!r}: rate {raw!r} is not a number (use e.g. 429=0.02)") from None
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"fault {spec!r}: rate must be between 0 and 1")
        return kind, rate
    if ":" in text:
        raw, _, kind = text.partition(":")
        kind = _check_kind(kind)
        try:
            index = int(raw)
        except ValueError:
            raise ConfigError(f"fault {spec!r}: {raw!r} is not a request number (use e.g. 5:hang)") from None
        if index < 1:
            raise ConfigError(f"fault {spec!r}: the request number must be >= 1")
        return kind, index
    raise ConfigError(f"fault {spec!r} is neither KIND=RATE (429=0.02) nor N:KIND (5:hang)")
