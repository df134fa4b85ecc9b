"""Statistics over raw request samples; the definitions live in ``harness/DEFINITIONS.md``.

Percentiles are exact over the raw samples (linear interpolation between closest
ranks, as ``numpy.percentile``'s default), never estimated from histogram buckets.
:func:`summarize` returns one scenario in the shape of DESIGN.md's report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_iterate.harness.samples import RequestSample

__all__ = [
    "DEFAULT_SAMPLE_CAP",
    "all_failed",
    "distribution",
    "error_kinds_text",
    "mann_whitney_u",
    "percentile",
    "summarize",
]

DEFAULT_SAMPLE_CAP = 5000
_QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q!r} is outside 0..100")
    if not values:
        return math.nan
    xs = values if presorted else sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution(values: Iterable[float]) -> dict[str, Any]:
    """count, mean, min, p50, p90, p95, p99, p99_9, max, stddev, q1, q3 of ``values``.

    Empty input gives ``{"count": 0}`` and ``None`` for the rest (JSON has no NaN).
    """
    xs = sorted(float(v) for v in values)
    n = len(xs)
    keys = ["mean", "min", *(k for k, _ in _QUANTILES), "max", "stddev", "q1", "q3"]
    if n == 0:
        return {"count": 0, **{k: None for k in keys}}
    mean = math.fsum(xs) / n
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    out: dict[str, Any] = {"count": n, "mean": mean, "min": xs[0]}
    for key, q in _QUANTILES:
        out[key] = percentile(xs, q, presorted=True)
    out["max"] = xs[-1]
    out["stddev"] = math.sqrt(var)
    out["q1"] = percentile(xs, 25.0, presorted=True)
    out["q3"] = percentile(xs, 75.0, presorted=True)
    return out


def _cap(values: Sequence[float], cap: int) -> list[float]:
    """At most ``cap`` values, evenly strided (keeps the time order and the spread)."""
    if len(values) <= cap:
        return [round(v, 6) for v in values]
    step = len(values) / cap
    return [round(values[int(i * step)], 6) for i in range(cap)]


def _goodput(
    samples: Sequence[RequestSample], objectives: Mapping[str, float], wall_s: float
) -> dict[str, Any]:
    """Requests that succeeded and met every per-request objective (``latency_s``,
    ``ttft_s``, ``tpot_s``, ``itl_s`` upper bounds)."""
    good = 0
    for s in samples:
        if not s.ok:
            continue
        met = True
        for metric, bound in objectives.items():
            value = getattr(s, metric, None)
            if value is None or value > bound:
                met = False
                break
        good += met
    return {
        "objectives": dict(objectives),
        "good_requests": good,
        "goodput_rps": good / wall_s if wall_s > 0 else None,
        "fraction": good / len(samples) if samples else None,
    }


def summarize(
    name: str,
    samples: Sequence[RequestSample],
    wall_s: float,
    *,
    objectives: Mapping[str, float] | None = None,
    sample_cap: int = DEFAULT_SAMPLE_CAP,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One scenario of the report, from raw samples over ``wall_s`` seconds of run.

    ``latency_s`` counts from scheduled send times; ``service_s`` from actual sends;
    ``scheduling_lag_s`` is their difference. ``samples_s`` keeps (capped) raw
    latencies in send order for later significance tests, ``timeline`` pairs of
    (scheduled offset, latency) for plots. ``extra`` keys (e.g. the load shape) are
    merged in.
    """
    ordered = sorted(samples, key=lambda s: s.scheduled_s)
    n = len(ordered)
    errors = [s for s in ordered if not s.ok]
    by_kind: dict[str, int] = {}
    for s in errors:
        kind = s.error_kind or "error"
        by_kind[kind] = by_kind.get(kind, 0) + 1
    ok = [s for s in ordered if s.ok]
    latencies = [s.latency_s for s in ordered]
    prompt = sum(s.prompt_tokens for s in ordered)
    completion = sum(s.completion_tokens for s in ok)
    hits = sum(1 for s in ordered if s.cache_hit)
    tiers: dict[str, int] = {}
    for s in ordered:
        if s.cache_tier is not None:
            tiers[s.cache_tier] = tiers.get(s.cache_tier, 0) + 1
    stage_names: list[str] = []
    for s in ordered:
        for st in s.stages:
            if st not in stage_names:
                stage_names.append(st)
    stages = {st: distribution(s.stages[st] for s in ordered if st in s.stages) for st in stage_names}
    t0 = ordered[0].scheduled_s if ordered else 0.0
    out: dict[str, Any] = {
        "name": name,
        "requests": n,
        "errors": len(errors),
        "error_rate": len(errors) / n if n else 0.0,
        "errors_by_kind": by_kind,
        "wall_s": wall_s,
        "throughput_rps": len(ok) / wall_s if wall_s > 0 else None,
        "output_tokens_per_s": completion / wall_s if wall_s > 0 else None,
        "latency_s": distribution(latencies),
        "service_s": distribution(s.service_s for s in ordered),
        "scheduling_lag_s": distribution(s.lag_s for s in ordered),
        "ttft_s": distribution(v for s in ok if (v := s.ttft_s) is not None),
        "itl_s": distribution(v for s in ok if (v := s.itl_s) is not None),
        "tpot_s": distribution(v for s in ok if (v := s.tpot_s) is not None),
        "stages": stages,
        "cache": {
            "hits": hits,
            "misses": n - hits,
            "hit_rate": hits / n if n else 0.0,
            "by_tier": tiers,
        },
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "retries": sum(s.retries for s in ordered),
        "samples_s": _cap(latencies, sample_cap),
        "timeline": [
            [round(s.scheduled_s - t0, 6), round(s.latency_s, 6), int(s.ok)]
            for s in (
                ordered if n <= sample_cap else [ordered[int(i * n / sample_cap)] for i in range(sample_cap)]
            )
        ],
    }
    if objectives:
        out["goodput"] = _goodput(ordered, objectives, wall_s)
    if extra:
        out.update(extra)
    return out


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test with the normal approximation and tie correction.

    Returns ``(u_statistic_of_a, p_value)``. With fewer than 2 values on a side the
    p-value is 1.0 (nothing can be shown).
    """
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return 0.0, 1.0
    pooled = sorted([(float(x), 0) for x in a] + [(float(x), 1) for x in b])
    ranks = [0.0] * len(pooled)
    tie_term = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[k] = rank
        t = j - i + 1
        tie_term += t**3 - t
        i = j + 1
    r1 = math.fsum(r for r, (_, g) in zip(ranks, pooled, strict=True) if g == 0)
    u1 = r1 - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    n = n1 + n2
    sigma2 = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    if sigma2 <= 0:
        return u1, 1.0
    z = (abs(u1 - mu) - 0.5) / math.sqrt(sigma2)  # continuity correction
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return u1, min(1.0, p)


def error_kinds_text(summary: Mapping[str, Any]) -> str:
    """``"ConnectError 4, RequestTimeout 1"`` from a summary's ``errors_by_kind`` ("" if none)."""
    kinds = summary.get("errors_by_kind") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))


def all_failed(summary: Mapping[str, Any], *, ignore: Sequence[str] = ()) -> bool:
    """True when the run had requests and every one failed with an error kind not in
    ``ignore``: nothing was measured, and its latencies are those of errors."""
    requests = summary.get("requests") or 0
    kinds = summary.get("errors_by_kind") or {}
    counted = (summary.get("errors") or 0) - sum(kinds.get(k, 0) for k in ignore)
    return bool(requests) and counted >= requests
