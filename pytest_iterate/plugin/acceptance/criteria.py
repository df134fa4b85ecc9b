"""The V2 acceptance criteria of docs/DESIGN.md as data: id, default threshold, unit, direction.

A criterion passes when ``observed <= threshold`` (direction ``"<="``) or
``observed >= threshold`` (``">="``). Thresholds are in the criterion's unit, which is
also the unit of ``--iterate-threshold id=value`` (``cache.hit_rate_repeat=40`` means
40 %). ``needs_faults`` criteria need the embedded mock (it counts attempts per request,
injects faults, enforces rate limits) and are skipped against a real endpoint;
``scenario`` names the shared run whose results they read
(:mod:`pytest_iterate.plugin.acceptance.scenarios`).

>>> CRITERIA_BY_ID["latency.e2e_mean"].passes(2.9, 3.0)
True
>>> CRITERIA_BY_ID["throughput.requests_per_min"].passes(250.0, 300.0)
False
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal, NamedTuple

__all__ = ["CRITERIA", "CRITERIA_BY_ID", "Criterion"]


class Criterion(NamedTuple):  # a NamedTuple, not a dataclass: the plugin imports this on every start
    id: str
    title: str
    default: float
    unit: str
    direction: Literal["<=", ">="]
    scenario: str
    needs_faults: bool = False

    def passes(self, observed: float, threshold: float) -> bool:
        if observed != observed:  # NaN: nothing was measured
            return False
        return observed <= threshold if self.direction == "<=" else observed >= threshold


CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "latency.e2e_mean",
        "mean end-to-end latency of the successful requests, standard workload",
        3.0,
        "s",
        "<=",
        "standard",
    ),
    Criterion(
        "latency.iteration_mean_c5",
        "wall time / successful iterations at concurrency 5",
        1.0,
        "s",
        "<=",
        "concurrency_5",
    ),
    Criterion(
        "latency.overhead_mean",
        "mean latency outside the HTTP attempts (stages, queue, backoff)",
        0.3,
        "s",
        "<=",
        "standard",
    ),
    Criterion(
        "throughput.requests_per_min", "completed requests per minute", 300.0, "req/min", ">=", "standard"
    ),
    Criterion(
        "throughput.designs_100",
        "100 designs end to end (wall time per 100 answered)",
        30.0,
        "s",
        "<=",
        "standard",
    ),
    Criterion(
        "concurrency.no_timeouts_c10",
        "10 concurrent requests against an endpoint that queues: timeouts and other failures",
        0.0,
        "count",
        "<=",
        "queue_10",
    ),
    Criterion(
        "cache.hit_rate_repeat",
        "hit rate on a repeated run of the same design set, each hit its own request's answer",
        30.0,
        "%",
        ">=",
        "repeat",
    ),
    Criterion(
        "tokens.no_overflow",
        "requests the endpoint refused for length (before any repair) + "
        "responses neither complete nor flagged",
        0.0,
        "count",
        "<=",
        "long_context",
    ),
    Criterion(
        "errors.rate_with_retries",
        "requests still failed after retries (2 % transient 429/503 injected on the mock)",
        0.5,
        "%",
        "<=",
        "faults",
    ),
    Criterion(
        "retries.bounded",
        "attempts beyond max retries, counted by the endpoint + unhandled exceptions",
        0.0,
        "count",
        "<=",
        "retry_bound",
        needs_faults=True,
    ),
    Criterion(
        "cpu.utilization",
        "busy share of the event loop over the standard run (not waiting for I/O)",
        70.0,
        "%",
        "<=",
        "standard",
    ),
    Criterion(
        "observability.stage_logs",
        "stages of requests with timestamp and duration",
        100.0,
        "%",
        ">=",
        "standard",
    ),
    Criterion(
        "observability.metrics_endpoint",
        "/metrics names missing + values that disagree with the run",
        0.0,
        "count",
        "<=",
        "metrics",
    ),
    Criterion(
        "degradation.busy_fast",
        "when saturated, a 503 busy answer over HTTP with Retry-After and retry-after-ms",
        50.0,
        "ms",
        "<=",
        "saturation",
    ),
    Criterion(
        "ratelimit.rejected",
        "429 answers + failed requests, per 100 requests, against request and token limits",
        1.0,
        "%",
        "<=",
        "rate_limit",
        needs_faults=True,
    ),
    Criterion(
        "ratelimit.rate_achieved",
        "share of the allowed rate achieved against request and token limits (the binding one)",
        90.0,
        "%",
        ">=",
        "rate_limit",
        needs_faults=True,
    ),
)

CRITERIA_BY_ID: MappingProxyType[str, Criterion] = MappingProxyType({c.id: c for c in CRITERIA})
