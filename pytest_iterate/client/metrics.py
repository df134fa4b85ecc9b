"""Prometheus metrics in a registry owned by the pipeline (never the global default).

The names are fixed by docs/DESIGN.md; labels stay low-cardinality. One
:class:`IterateMetrics` per pipeline/client; tests make their own.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    push_to_gateway,
    write_to_textfile,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "METRIC_NAMES", "IterateMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)

METRIC_NAMES = (
    "iterate_requests_total",
    "iterate_request_duration_seconds",
    "iterate_stage_duration_seconds",
    "iterate_time_to_first_token_seconds",
    "iterate_retries_total",
    "iterate_cache_requests_total",
    "iterate_inflight_requests",
    "iterate_queue_depth",
    "iterate_tokens_total",
    "iterate_token_guard_actions_total",
)


class IterateMetrics:
    """The pipeline's metrics. ``registry`` can be served, pushed or written."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "iterate_requests", "LLM requests by model and outcome", ["model", "outcome"], registry=r
        )
        self.request_duration = Histogram(
            "iterate_request_duration_seconds",
            "End-to-end duration of one LLM request, retries included",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "iterate_stage_duration_seconds",
            "Duration of one pipeline stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "iterate_time_to_first_token_seconds",
            "Time from send to the first content token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter("iterate_retries", "Retries by reason", ["reason"], registry=r)
        self.cache_requests = Counter(
            "iterate_cache_requests", "Cache lookups by tier and result", ["tier", "result"], registry=r
        )
        self.inflight = Gauge("iterate_inflight_requests", "Requests being sent now", registry=r)
        self.queue_depth = Gauge("iterate_queue_depth", "Requests waiting for a slot", registry=r)
        self.tokens = Counter("iterate_tokens", "Tokens by direction", ["direction"], registry=r)
        self.token_guard_actions = Counter(
            "iterate_token_guard_actions", "Token guard actions", ["action"], registry=r
        )
        self.cache_corrupt = Counter(
            "iterate_cache_corrupt",
            "Cache entries found damaged or of the wrong shape (each removed)",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def write_textfile(self, path: str | Path) -> Path:
        """Write the exposition atomically (for node_exporter's textfile collector)."""

        write_to_textfile(str(path), self.registry)
        return Path(path)

    def push(self, gateway: str, job: str = "pytest-iterate") -> None:
        """Push to a Pushgateway (CI jobs are short-lived)."""

        push_to_gateway(gateway, job=job, registry=self.registry)
