"""What the mock remembers of the requests it saw: counters for all, records for the recent.

Memory stays bounded however long a run is: :class:`CallLog` counts every request
(by route, status and fault) and keeps only the last ``keep`` :class:`CallRecord`
objects (default 1,000) in a ring. A record holds the request's JSON body only
when the core was built with ``keep_bodies=True``; otherwise ``body`` is None
(a design request's body is a few kilobytes: 100,000 of them were ~270 MB).

Attempts per logical request (:class:`Attempts`): a client marks every attempt of
one call with the same ``X-Client-Request-Id`` header; without the header the
request's :func:`~.digest.request_digest` (sha256 of the raw bytes when the body is
not JSON) stands for the id, so identical bodies count as one logical request.
The table of ids is bounded too (``keep_request_ids``, default 10,000 ids).

>>> log = CallLog(keep=2)
>>> for i in range(1, 4):
...     log.add("chat", CallRecord(index=i, method="POST", path="/v1/chat/completions",
...                                body=None, stream=False, status=200, fault=None))
>>> [r.index for r in log.recent], log.recorded, dict(log.statuses)
([2, 3], 3, {200: 3})
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from pytest_iterate.client.errors import ConfigError

__all__ = ["DEFAULT_KEEP_CALLS", "DEFAULT_KEEP_REQUEST_IDS", "Attempts", "CallLog", "CallRecord", "MockStats"]

DEFAULT_KEEP_CALLS = 1000
DEFAULT_KEEP_REQUEST_IDS = 10_000


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One request the core saw (``index`` 0 for non-completion routes).

    ``body`` is the parsed JSON body when the core keeps bodies, else None.
    ``status`` 0 means no HTTP answer (a ``hang`` or ``reset`` fault). ``digest`` is
    the :func:`~.digest.request_digest` of a valid completion request ("" otherwise).
    ``request_id`` is the logical request a completion attempt belongs to and
    ``attempt`` its number, from 1 (see :class:`Attempts`; "" and 0 on other routes).
    """

    index: int
    method: str
    path: str
    body: Any
    stream: bool
    status: int
    fault: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    planned_ttft_s: float = 0.0
    planned_total_s: float = 0.0
    digest: str = ""
    request_id: str = ""
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class MockStats:
    """Counters since the core was built (all requests, not only the recent records).

    ``routes`` counts requests by route (``chat``, ``completions``, ``models``,
    ``other``...); ``statuses`` by HTTP status (0: no answer); ``faults`` by kind
    (injected kinds, ``rate_limit``, ``context_length_exceeded``). ``recorded``
    is how many call records were made, ``kept`` how many the ring still holds.

    Attempts (completion requests only, see :class:`Attempts`): ``logical_requests``
    is the number of distinct request ids, ``max_attempts`` the most attempts one
    of them made, ``attempts`` how many logical requests made exactly k attempts
    (``{1: 97, 2: 3}``), ``request_ids_evicted`` how many ids the bounded table
    forgot (when > 0, an id retried after being forgotten counted as new).
    """

    requests: int
    completions: int
    statuses: dict[int, int]
    faults: dict[str, int]
    concurrency: int
    max_concurrency: int
    queued: int
    prompt_tokens: int
    completion_tokens: int
    routes: dict[str, int]
    recorded: int
    kept: int
    logical_requests: int
    max_attempts: int
    attempts: dict[int, int]
    request_ids_evicted: int


class CallLog:
    """Counters of every request and a ring of the last ``keep`` records (``keep`` >= 0)."""

    def __init__(self, keep: int = DEFAULT_KEEP_CALLS) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ConfigError(f"keep_calls must be an integer >= 0 (0 keeps no records), got {keep!r}")
        self.recent: deque[CallRecord] = deque(maxlen=keep)
        self.recorded = 0
        self.routes: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.faults: Counter[str] = Counter()

    def add(self, route: str, record: CallRecord) -> None:
        """Count ``record`` and keep it (the oldest record leaves a full ring)."""
        self.recorded += 1
        self.routes[route] += 1
        self.statuses[record.status] += 1
        if record.fault:
            self.faults[record.fault] += 1
        self.recent.append(record)


class Attempts:
    """Attempts per logical request, keyed by request id, for the most recent ``limit`` ids.

    ``add(key)`` returns the attempt number of this arrival (1 for a new id).
    ``numbers[k]`` counts the arrivals that were some request's k-th attempt, so
    ``numbers[1]`` is the number of logical requests and ``numbers[k] - numbers[k+1]``
    how many made exactly k attempts. An id unseen for ``limit`` newer ids is
    forgotten (``evicted`` counts them); if it comes back it counts as new.

    >>> a = Attempts(limit=2)
    >>> [a.add(k) for k in ("x", "y", "x", "x", "z")]
    [1, 1, 2, 3, 1]
    >>> a.logical, a.max_attempts, a.histogram(), a.get("x"), a.evicted
    (3, 3, {1: 2, 3: 1}, 3, 1)
    """

    def __init__(self, limit: int = DEFAULT_KEEP_REQUEST_IDS) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"keep_request_ids must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.numbers: Counter[int] = Counter()
        self.evicted = 0
        self._seen: OrderedDict[str, int] = OrderedDict()

    def add(self, key: str) -> int:
        seen = self._seen
        n = seen.get(key, 0) + 1
        seen[key] = n
        seen.move_to_end(key)
        if len(seen) > self.limit:
            seen.popitem(last=False)
            self.evicted += 1
        self.numbers[n] += 1
        return n

    def get(self, key: str) -> int:
        """Attempts seen so far for ``key`` (0: never seen, or forgotten)."""
        return self._seen.get(key, 0)

    @property
    def logical(self) -> int:
        return self.numbers[1]

    @property
    def max_attempts(self) -> int:
        return max(self.numbers, default=0)

    def histogram(self) -> dict[int, int]:
        """Logical requests by the number of attempts they made so far (``{1: 97, 2: 3}``)."""
        numbers = self.numbers
        out = {k: numbers[k] - numbers.get(k + 1, 0) for k in sorted(numbers)}
        return {k: v for k, v in out.items() if v}
