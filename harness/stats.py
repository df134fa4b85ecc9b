"""Statistics over raw request samples; the definitions live in ``harness/DEFINITIONS.md``.

Percentiles are exact over the raw samples (linear interpolation between closest
ranks, as ``numpy.percentile``'s default), never estimated from histogram buckets.
:func:`summarize` returns one scenario as a typed
:class:`~pytest_iterate.harness.summary.ScenarioSummary`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import (
    CacheCounts,
    Distribution,
    Goodput,
    ScenarioSummary,
    TokenCounts,
    percentile,
)

__all__ = ["DEFAULT_SAMPLE_CAP", "mann_whitney_u", "percentile", "summarize"]

DEFAULT_SAMPLE_CAP = 5000


def _cap(values: Sequence[float], cap: int) -> list[float]:
    """At most ``cap`` values, evenly strided (keeps the time order and the spread)."""
    if len(values) <= cap:
        return [round(v, 6) for v in values]
    step = len(values) / cap
    return [round(values[int(i * step)], 6) for i in range(cap)]


def _keys(ordered: Sequence[RequestSample], cap: int) -> tuple[str, ...]:
    """The request keys parallel to ``samples_s`` (the same striding), or () unless every
    sample has one: a comparison pairs the same requests of two runs by them."""
    if not ordered or any(s.key is None for s in ordered):
        return ()
    keys = [s.key or "" for s in ordered]
    if len(keys) <= cap:
        return tuple(keys)
    step = len(keys) / cap
    return tuple(keys[int(i * step)] for i in range(cap))


def _goodput(samples: Sequence[RequestSample], objectives: Mapping[str, float], wall_s: float) -> Goodput:
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
    return Goodput(
        dict(objectives),
        good,
        good / wall_s if wall_s > 0 else None,
        good / len(samples) if samples else None,
    )


def summarize(
    name: str,
    samples: Sequence[RequestSample],
    wall_s: float,
    *,
    objectives: Mapping[str, float] | None = None,
    sample_cap: int = DEFAULT_SAMPLE_CAP,
    load: str | None = None,
    warmup: int = 0,
) -> ScenarioSummary:
    """One scenario of the report, from raw samples over ``wall_s`` seconds of run.

    ``latency_s`` counts from scheduled send times; ``service_s`` from actual sends;
    ``scheduling_lag_s`` is their difference. ``samples_s`` keeps (capped) raw
    latencies in send order for later significance tests, ``timeline`` triples of
    (scheduled offset, latency, ok) for plots. Callers add what they know beyond the
    samples with :meth:`ScenarioSummary.replace` / :meth:`~ScenarioSummary.with_info`.
    """
    ordered = sorted(samples, key=lambda s: s.scheduled_s)
    n = len(ordered)
    by_kind: dict[str, int] = {}
    for s in ordered:
        if not s.ok:
            kind = s.error_kind or "error"
            by_kind[kind] = by_kind.get(kind, 0) + 1
    ok = [s for s in ordered if s.ok]
    latencies = [s.latency_s for s in ordered]
    completion = sum(s.completion_tokens for s in ok)
    tiers: dict[str, int] = {}
    for s in ordered:
        if s.cache_tier is not None:
            tiers[s.cache_tier] = tiers.get(s.cache_tier, 0) + 1
    hits = sum(tiers.values())
    stage_names: list[str] = []
    for s in ordered:
        stage_names.extend(st for st in s.stages if st not in stage_names)
    t0 = ordered[0].scheduled_s if ordered else 0.0
    shown = ordered if n <= sample_cap else [ordered[int(i * n / sample_cap)] for i in range(sample_cap)]
    return ScenarioSummary(
        name=name,
        requests=n,
        errors=n - len(ok),
        errors_by_kind=by_kind,
        wall_s=wall_s,
        throughput_rps=len(ok) / wall_s if wall_s > 0 else None,
        output_tokens_per_s=completion / wall_s if wall_s > 0 else None,
        latency_s=Distribution.of(latencies),
        service_s=Distribution.of(s.service_s for s in ordered),
        scheduling_lag_s=Distribution.of(s.lag_s for s in ordered),
        ttft_s=Distribution.of(v for s in ok if (v := s.ttft_s) is not None),
        itl_s=Distribution.of(v for s in ok if (v := s.itl_s) is not None),
        tpot_s=Distribution.of(v for s in ok if (v := s.tpot_s) is not None),
        stages={st: Distribution.of(s.stages[st] for s in ordered if st in s.stages) for st in stage_names},
        cache=CacheCounts(hits=hits, misses=n - hits, by_tier=tiers),
        tokens=TokenCounts(prompt=sum(s.prompt_tokens for s in ordered), completion=completion),
        retries=sum(s.retries for s in ordered),
        samples_s=tuple(_cap(latencies, sample_cap)),
        sample_keys=_keys(ordered, sample_cap),
        timeline=tuple((round(s.scheduled_s - t0, 6), round(s.latency_s, 6), int(s.ok)) for s in shown),
        goodput=_goodput(ordered, objectives, wall_s) if objectives else None,
        load=load,
        warmup=warmup,
        gated=not (n and hits == n),
        gate_note="every request was answered from the cache" if n and hits == n else "",
    )


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
