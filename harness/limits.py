"""Client limits that follow the load: no cap the user did not ask for.

A closed loop of N workers has at most N requests in flight, so the pipeline's
concurrency limit (``max_concurrent_requests``) and connection pool
(``max_connections``) get N. An open loop at R requests/s has at most R times the
longest a request can live in flight (every attempt timing out, the backoffs between
them), so both get that. Either way the load shape, not a default of 10, decides how
many requests reach the endpoint at once.

One bound stays: the number of files the process may open (``ulimit -n``), one per
connection. :func:`raise_open_files_limit` lifts the soft limit to the hard one;
:func:`client_limits` raises :class:`LimitError` naming the setting when a closed loop
needs more connections than that, and caps an open loop's pool there (``capped_by``
says so, and the run prints it).

>>> from pytest_iterate.harness.loads import ClosedLoop, ConstantRate
>>> client_limits([ClosedLoop(64)], request_timeout_s=10, max_attempts=3, open_files=4096)
ClientLimits(max_concurrent_requests=64, max_connections=64, capped_by='')
>>> client_limits([ConstantRate(100)], request_timeout_s=2, max_attempts=1, open_files=4096).max_connections
200
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_iterate.harness.loads import ClosedLoop, LoadShape

try:  # not on Windows
    import resource
except ImportError:  # pragma: no cover
    resource = None  # type: ignore[assignment]

__all__ = ["FILES_RESERVED", "ClientLimits", "LimitError", "client_limits", "raise_open_files_limit"]

FILES_RESERVED = 64  # files kept for everything but connections (logs, caches, the event loop)


class LimitError(ValueError):
    """The requested load cannot run within a limit of this machine; names the setting."""


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """The limits a run's client gets; ``capped_by`` names what bounded the pool, if anything."""

    max_concurrent_requests: int
    max_connections: int
    capped_by: str = ""


def raise_open_files_limit() -> int | None:
    """Lift the soft open-files limit to the hard one; the limit now in force (None: unknown)."""
    if resource is None:  # pragma: no cover
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else int(soft)


def longest_in_flight_s(request_timeout_s: float, max_attempts: int, backoff_max_s: float = 0.0) -> float:
    """The longest one request can stay in flight: every attempt timing out, the waits between."""
    return request_timeout_s * max_attempts + backoff_max_s * max(0, max_attempts - 1)


def client_limits(
    shapes: Sequence[LoadShape],
    *,
    request_timeout_s: float,
    max_attempts: int,
    backoff_max_s: float = 0.0,
    open_files: int | None = None,
) -> ClientLimits:
    """Limits no smaller than any of ``shapes`` can use (see the module doc)."""
    need = 1
    closed = 0
    for shape in shapes:
        if isinstance(shape, ClosedLoop):
            closed = max(closed, shape.concurrency)
            need = max(need, shape.concurrency)
        else:
            rate = float(getattr(shape, "rps", 1.0))
            # poisson bursts run above the mean rate for a while: twice the mean bounds them in practice
            factor = 2.0 if getattr(shape, "label", "").startswith("poisson") else 1.0
            lifetime = longest_in_flight_s(request_timeout_s, max_attempts, backoff_max_s)
            need = max(need, math.ceil(rate * factor * lifetime))
    budget = None if open_files is None else max(1, open_files - FILES_RESERVED)
    if budget is not None and closed > budget:
        raise LimitError(
            f"--concurrency {closed} needs {closed} connections, but this process may open only "
            f"{open_files} files (ulimit -n); raise it (ulimit -n {closed + FILES_RESERVED * 2}) "
            f"or lower --concurrency"
        )
    if budget is not None and need > budget:
        return ClientLimits(
            need,
            budget,
            capped_by=f"connections capped at {budget} by the open-files limit (ulimit -n {open_files}); "
            f"an open loop needing more queues for a connection (the report's max_inflight shows it)",
        )
    return ClientLimits(need, need)
