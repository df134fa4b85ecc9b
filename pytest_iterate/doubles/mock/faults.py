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

Three forms, as CLI strings (``--fault``, repeatable) or as fields of a :class:`FaultPlan`:

    KIND=RATE      429=0.02      each request, independently, with probability RATE
    N:KIND         5:hang        the N-th completion request (1-based, arrival order)
    KINDxK=SHARE   503x3=0.02    a SHARE of logical requests fail their first K attempts

Which request gets a fault: a script entry for its index wins; then a first-attempts
rule (``KINDxK=SHARE``); otherwise one uniform draw from the request's own RNG (see
:mod:`.core`) is compared with the cumulative rates in :data:`FAULT_KINDS` order, so
a seed fixes the whole sequence.

First-attempts rules reach the client's retry bound on purpose. A logical request
is named by its ``X-Client-Request-Id`` header, the same over its retries (or by its
body's digest, see :mod:`.calls`); whether it falls in a rule's share is decided by
a hash of ``(seed, request id)``, not by arrival order, so the same requests fail
under any concurrency. Its attempts 1..K get the fault (a 429 carries the plan's
``retry_after_s``); attempt K+1 and later are treated as any other request. With
K >= the client's ``max_attempts`` those requests exhaust their retries; with
K = ``max_attempts - 1`` they succeed on their last attempt (when no rate fault hits
it). Several rules take disjoint shares (their shares add up to at most 1).

>>> plan = FaultPlan.parse(["429=0.02", "503=0.01", "3:reset", "503x3=0.05"])
>>> plan.rates["429"], plan.script[3], plan.first_attempts
(0.02, 'reset', (FirstAttempts(kind='503', attempts=3, share=0.05),))
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pytest_iterate.client.errors import ConfigError

__all__ = ["FAULT_FORMS", "FAULT_KINDS", "FaultPlan", "FirstAttempts", "parse_fault"]

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


#: The accepted forms of a fault string, for error messages.
FAULT_FORMS = "KIND=RATE (429=0.02), N:KIND (5:hang) or KINDxK=SHARE (503x3=0.02)"
_NEITHER = "neither KIND=RATE (429=0.02), N:KIND (5:hang) nor KINDxK=SHARE (503x3=0.02)"
_FIRST_RE = re.compile(r"^(?P<kind>.+?)x(?P<k>[^x]*)$")


def _check_kind(kind: str) -> str:
    kind = kind.strip()
    if kind not in FAULT_KINDS:
        hint = ""
        m = _FIRST_RE.match(kind)
        if m and m.group("kind") in FAULT_KINDS:
            hint = f" ({kind!r} is a first-attempts rule: use FirstAttempts or the string {kind}=SHARE)"
        raise ConfigError(f"unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}{hint}")
    return kind


@dataclass(frozen=True, slots=True)
class FirstAttempts:
    """A ``share`` of logical requests fail their first ``attempts`` attempts with ``kind``.

    >>> FirstAttempts("503", 3, 0.02)
    FirstAttempts(kind='503', attempts=3, share=0.02)
    """

    kind: str
    attempts: int
    share: float

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        name = f"first-attempts fault {self.kind}x{self.attempts!r}"
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"{name}: the attempt count must be an integer >= 1")
        if not 0.0 <= float(self.share) <= 1.0:
            raise ConfigError(f"{name}={self.share!r}: the share must be between 0 and 1")

    def __str__(self) -> str:
        return f"{self.kind}x{self.attempts}={self.share:g}"


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Rates (``{"429": 0.02}``, each in [0, 1], summing to <= 1), a script (``{5: "hang"}``)
    and first-attempts rules (``(FirstAttempts("503", 3, 0.02),)``, shares summing to <= 1).

    ``retry_after_s`` is what 429s ask the client to wait; ``hang_s`` how long a hang lasts.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    script: Mapping[int, str] = field(default_factory=dict)
    retry_after_s: float = 1.0
    hang_s: float = 3600.0
    first_attempts: tuple[FirstAttempts, ...] = ()

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
        shares = sum(rule.share for rule in self.first_attempts)
        if shares > 1.0 + 1e-9:
            rules = ", ".join(str(rule) for rule in self.first_attempts)
            raise ConfigError(f"first-attempts shares add up to {shares:g}, more than 1 ({rules})")

    @classmethod
    def parse(cls, specs: Iterable[str], **kwargs: float) -> FaultPlan:
        """Build a plan from CLI strings: ``"429=0.02"``, ``"5:hang"`` or ``"503x3=0.02"``."""
        rates: dict[str, float] = {}
        script: dict[int, str] = {}
        first: list[FirstAttempts] = []
        for spec in specs:
            parsed = parse_fault(spec)
            if isinstance(parsed, FirstAttempts):
                first.append(parsed)
                continue
            kind, value = parsed
            if isinstance(value, int):
                script[value] = kind
            else:
                rates[kind] = rates.get(kind, 0.0) + value
        return cls(rates=rates, script=script, first_attempts=tuple(first), **kwargs)

    @property
    def empty(self) -> bool:
        first = any(rule.share for rule in self.first_attempts)
        return not self.script and not any(self.rates.values()) and not first

    def first_attempts_for(self, request_id: str, seed: int) -> FirstAttempts | None:
        """The first-attempts rule whose share holds the logical request ``request_id``, or None.

        A function of ``(seed, request_id)`` only: a checker can tell in advance which
        requests a rule will make fail.
        """
        if not self.first_attempts:
            return None
        digest = hashlib.sha256(f"first-attempts\x00{seed}\x00{request_id}".encode()).digest()
        v = int.from_bytes(digest[:8], "big") / 2.0**64
        acc = 0.0
        for rule in self.first_attempts:
            acc += rule.share
            if v < acc:
                return rule
        return None

    def pick(
        self, index: int, rng: random.Random, *, request_id: str = "", attempt: int = 1, seed: int = 0
    ) -> str | None:
        """The fault of the ``index``-th request (1-based), or None. Draws exactly one number.

        ``request_id`` and ``attempt`` (its attempt number) and ``seed`` serve the
        first-attempts rules.
        """
        u = rng.random()
        scripted = self.script.get(index)
        if scripted is not None:
            return scripted
        rule = self.first_attempts_for(request_id, seed)
        if rule is not None and attempt <= rule.attempts:
            return rule.kind
        acc = 0.0
        for kind in FAULT_KINDS:
            rate = self.rates.get(kind)
            if rate:
                acc += rate
                if u < acc:
                    return kind
        return None


def parse_fault(spec: str) -> tuple[str, float | int] | FirstAttempts:
    """``"429=0.02"`` -> ``("429", 0.02)``; ``"5:hang"`` -> ``("hang", 5)``;
    ``"503x3=0.02"`` -> ``FirstAttempts("503", 3, 0.02)``; anything else: ConfigError."""
    text = spec.strip()
    if "=" in text:
        kind, _, raw = text.partition("=")
        kind = kind.strip()
        first = _FIRST_RE.match(kind)
        if kind not in FAULT_KINDS and first is not None and first.group("kind").strip() in FAULT_KINDS:
            return _parse_first(spec, first.group("kind").strip(), first.group("k"), raw)
        if kind not in FAULT_KINDS:
            raise ConfigError(
                f"fault {spec!r}: unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)} "
                f"(forms: {FAULT_FORMS})"
            )
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
    raise ConfigError(f"fault {spec!r} is {_NEITHER}")


def _parse_first(spec: str, kind: str, raw_k: str, raw_share: str) -> FirstAttempts:
    """The ``KINDxK=SHARE`` form (``kind`` already known to be a fault kind)."""
    try:
        attempts = int(raw_k)
    except ValueError:
        raise ConfigError(
            f"fault {spec!r}: attempt count {raw_k!r} is not an integer (use e.g. {kind}x3=0.02: "
            "a share of logical requests fail their first 3 attempts)"
        ) from None
    if attempts < 1:
        raise ConfigError(f"fault {spec!r}: the attempt count must be >= 1, got {attempts}")
    try:
        share = float(raw_share)
    except ValueError:
        msg = f"fault {spec!r}: share {raw_share!r} is not a number (use e.g. {kind}x3=0.02)"
        raise ConfigError(msg) from None
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"fault {spec!r}: the share must be between 0 and 1, got {share:g}")
    return FirstAttempts(kind, attempts, share)
