"""What the mock remembers of the requests it saw: counters for all, records for the recent.

Memory stays bounded however long a run is: :class:`CallLog` counts every request
(by route, status and fault) and keeps only the last ``keep`` :class:`CallRecord`
objects (default 1,000) in a ring. A record holds the request's JSON body only
when the core was built with ``keep_bodies=True``; otherwise ``body`` is None
(a design request's body is a few kilobytes: 100,000 of them were ~270 MB).

>>> log = CallLog(keep=2)
>>> for i in range(1, 4):
...     log.add("chat", CallRecord(index=i, method="POST", path="/v1/chat/completions",
...                                body=None, stream=False, status=200, fault=None))
>>> [r.index for r in log.recent], log.recorded, dict(log.statuses)
([2, 3], 3, {200: 3})
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from pytest_iterate.client.errors import ConfigError

__all__ = ["DEFAULT_KEEP_CALLS", "CallLog", "CallRecord", "MockStats"]

DEFAULT_KEEP_CALLS = 1000


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One request the core saw (``index`` 0 for non-completion routes).

    ``body`` is the parsed JSON body when the core keeps bodies, else None.
    ``status`` 0 means no HTTP answer (a ``hang`` or ``reset`` fault). ``digest`` is
    the :func:`~.digest.request_digest` of a valid completion request ("" otherwise).
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


@dataclass(frozen=True, slots=True)
class MockStats:
    """Counters since the core was built (all requests, not only the recent records).

    ``routes`` counts requests by route (``chat``, ``completions``, ``models``,
    ``other``...); ``statuses`` by HTTP status (0: no answer); ``faults`` by kind
    (injected kinds, ``rate_limit``, ``context_length_exceeded``). ``recorded``
    is how many call records were made, ``kept`` how many the ring still holds.
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
