"""``metrics.prom``: the report's numbers in the Prometheus text format.

Gauges in a private registry (never the global default), one series per scenario
and per criterion; optionally pushed to a Pushgateway (CI jobs are short-lived).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pytest_iterate._files import write_atomic
from pytest_iterate.harness.summary import Report

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["FILENAME", "build_registry", "push", "render", "write"]

FILENAME = "metrics.prom"
_QUANTILES = ("p50", "p90", "p95", "p99", "p99_9", "max", "mean")


def build_registry(report: Report) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry(auto_describe=True)
    lat = Gauge(
        "iterate_bench_latency_seconds",
        "End-to-end latency from the scheduled send, by statistic",
        ["scenario", "stat"],
        registry=reg,
    )
    ttft = Gauge(
        "iterate_bench_ttft_seconds", "Time to first token, by statistic", ["scenario", "stat"], registry=reg
    )
    lag = Gauge(
        "iterate_bench_scheduling_lag_seconds",
        "Scheduling lag, by statistic",
        ["scenario", "stat"],
        registry=reg,
    )
    worker_lag = Gauge(
        "iterate_bench_worker_scheduling_lag_seconds",
        "Scheduling lag of one worker process of a run on several, by statistic",
        ["scenario", "worker", "stat"],
        registry=reg,
    )
    worker_reqs = Gauge(
        "iterate_bench_worker_requests",
        "Requests one worker process sent in the scenario",
        ["scenario", "worker"],
        registry=reg,
    )
    stage = Gauge("iterate_bench_stage_seconds", "Mean stage duration", ["scenario", "stage"], registry=reg)
    reqs = Gauge("iterate_bench_requests", "Requests sent in the scenario", ["scenario"], registry=reg)
    errs = Gauge("iterate_bench_errors", "Failed requests in the scenario", ["scenario"], registry=reg)
    rps = Gauge("iterate_bench_throughput_rps", "Completed requests per second", ["scenario"], registry=reg)
    hit = Gauge("iterate_bench_cache_hit_ratio", "Cache hit ratio", ["scenario"], registry=reg)
    obs = Gauge(
        "iterate_criterion_observed", "Observed value of an acceptance criterion", ["id"], registry=reg
    )
    thr = Gauge("iterate_criterion_threshold", "Threshold of an acceptance criterion", ["id"], registry=reg)
    ok = Gauge("iterate_criterion_passed", "1 if the criterion passed, 0 if not", ["id"], registry=reg)

    for s in report.scenarios:
        for gauge, dist in ((lat, s.latency_s), (ttft, s.ttft_s), (lag, s.scheduling_lag_s)):
            for q in _QUANTILES:
                if (v := dist.stat(q)) is not None:
                    gauge.labels(s.name, q).set(v)
        for w in s.workers:
            worker_reqs.labels(s.name, str(w.worker)).set(w.requests)
            for q in _QUANTILES:
                if (v := w.scheduling_lag_s.stat(q)) is not None:
                    worker_lag.labels(s.name, str(w.worker), q).set(v)
        for st, d in s.stages.items():
            if d.mean is not None:
                stage.labels(s.name, st).set(d.mean)
        reqs.labels(s.name).set(s.requests)
        errs.labels(s.name).set(s.errors)
        hit.labels(s.name).set(s.cache.hit_rate)
        if s.throughput_rps is not None:
            rps.labels(s.name).set(s.throughput_rps)
    for c in report.criteria:
        if c.observed is not None:
            obs.labels(c.id).set(c.observed)
        if isinstance(c.threshold, (int, float)):
            thr.labels(c.id).set(c.threshold)
        if c.passed is not None:
            ok.labels(c.id).set(1.0 if c.passed else 0.0)
    return reg


def render(report: Report) -> str:
    from prometheus_client import generate_latest

    return generate_latest(build_registry(report)).decode("utf-8")


def write(report: Report, folder: Path) -> Path:
    return write_atomic(Path(folder) / FILENAME, render(report))


def push(report: Report, gateway: str, job: str = "pytest-iterate-bench") -> None:
    """Push the report's gauges to a Pushgateway at ``gateway`` (``host:port`` or URL)."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=job, registry=build_registry(report))
