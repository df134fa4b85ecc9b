"""``metrics.prom``: the report's numbers in the Prometheus text format.

Gauges in a private registry (never the global default), one series per scenario
and per criterion; optionally pushed to a Pushgateway (CI jobs are short-lived).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["FILENAME", "build_registry", "push", "render", "write"]

FILENAME = "metrics.prom"
_QUANTILES = ("p50", "p90", "p95", "p99", "p99_9", "max", "mean")


def build_registry(report: Mapping[str, Any]) -> CollectorRegistry:
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

    def _num(v: Any) -> float | None:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    for s in report.get("scenarios", []):
        name = str(s.get("name", "scenario"))
        for gauge, key in ((lat, "latency_s"), (ttft, "ttft_s"), (lag, "scheduling_lag_s")):
            d = s.get(key) or {}
            for q in _QUANTILES:
                if isinstance(d, Mapping) and (v := _num(d.get(q))) is not None:
                    gauge.labels(name, q).set(v)
        for st, d in (s.get("stages") or {}).items():
            if isinstance(d, Mapping) and (v := _num(d.get("mean"))) is not None:
                stage.labels(name, st).set(v)
        for gauge, v in (
            (reqs, s.get("requests")),
            (errs, s.get("errors")),
            (rps, s.get("throughput_rps")),
            (hit, (s.get("cache") or {}).get("hit_rate")),
        ):
            if (x := _num(v)) is not None:
                gauge.labels(name).set(x)
    for c in report.get("criteria", []):
        cid = str(c["id"])
        if (v := _num(c.get("observed"))) is not None:
            obs.labels(cid).set(v)
        if (v := _num(c.get("threshold"))) is not None:
            thr.labels(cid).set(v)
        if isinstance(c.get("passed"), bool):
            ok.labels(cid).set(1.0 if c["passed"] else 0.0)
    return reg


def render(report: Mapping[str, Any]) -> str:
    from prometheus_client import generate_latest

    return generate_latest(build_registry(report)).decode("utf-8")


def write(report: Mapping[str, Any], folder: Path) -> Path:
    path = Path(folder) / FILENAME
    path.write_text(render(report), encoding="utf-8")
    return path


def push(report: Mapping[str, Any], gateway: str, job: str = "pytest-iterate-bench") -> None:
    """Push the report's gauges to a Pushgateway at ``gateway`` (``host:port`` or URL)."""
    from prometheus_client import push_to_gateway

    push_to_gateway(gateway, job=job, registry=build_registry(report))
