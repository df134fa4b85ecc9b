"""Statistics: exact percentiles, per-request definitions, scenario summary shape."""

from __future__ import annotations

import math
import random
from typing import ClassVar

import numpy as np
import pytest

from pytest_iterate.harness.samples import (
    RequestSample,
    sample_from_llm_response,
    sample_from_pipeline_result,
)
from pytest_iterate.harness.stats import mann_whitney_u, percentile, summarize
from pytest_iterate.harness.summary import Distribution, ScenarioSummary


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    rng = random.Random(q)
    xs = [rng.expovariate(3) for _ in range(517)]
    assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)), rel=1e-12)


def test_percentile_rejects_out_of_range_and_empty_is_nan() -> None:
    with pytest.raises(ValueError, match="101"):
        percentile([1.0], 101)
    assert math.isnan(percentile([], 50))


def test_distribution_fields() -> None:
    d = Distribution.of([1.0, 2.0, 3.0, 4.0])
    assert d.count == 4 and d.mean == 2.5 and d.min == 1.0 and d.max == 4.0
    assert d.p50 == 2.5 and d.q1 == 1.75 and d.q3 == 3.25
    assert d.stddev == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert Distribution.of([]).mean is None and Distribution.of([]).to_json()["p95"] is None


def test_per_request_definitions() -> None:
    s = RequestSample(
        scheduled_s=10.0,
        start_s=10.5,
        first_token_s=11.0,
        last_token_s=12.0,
        end_s=12.1,
        completion_tokens=11,
        attempts=3,
    )
    assert s.latency_s == pytest.approx(2.1)  # from the scheduled time
    assert s.service_s == pytest.approx(1.6)
    assert s.lag_s == pytest.approx(0.5)
    assert s.ttft_s == pytest.approx(1.0)
    assert s.itl_s == pytest.approx(1.0 / 10)  # (last - first) / (n - 1)
    assert s.tpot_s == pytest.approx(2.1 / 11)
    assert s.retries == 2
    one_token = RequestSample(scheduled_s=0, start_s=0, end_s=1, first_token_s=0.5, completion_tokens=1)
    assert one_token.itl_s is None


def _samples() -> list[RequestSample]:
    out = []
    for i in range(100):
        t = i * 0.1
        ok = i % 10 != 0
        out.append(
            RequestSample(
                scheduled_s=t,
                start_s=t + 0.001,
                end_s=t + 0.2 + i * 0.001,
                ok=ok,
                error_kind=None if ok else ("RateLimited" if i % 20 == 0 else "ServerError"),
                first_token_s=t + 0.05,
                prompt_tokens=10,
                completion_tokens=5 if ok else 0,
                cache_tier="memory" if i % 4 == 0 else None,
                attempts=2 if i % 5 == 0 else 1,
                stages={"llm_call": 0.15, "post_process": 0.01},
            )
        )
    return out


def test_summarize_has_design_shape_and_counts() -> None:
    summary = summarize("closed:1", _samples(), wall_s=10.0, objectives={"latency_s": 0.25})
    assert ScenarioSummary.from_json(summary.to_json()) == summary
    s = summary.to_json()
    for key in (
        "name",
        "requests",
        "errors",
        "throughput_rps",
        "latency_s",
        "ttft_s",
        "stages",
        "cache",
        "tokens",
        "retries",
    ):
        assert key in s
    assert set(s["latency_s"]) >= {"mean", "p50", "p90", "p95", "p99", "max"}
    assert s["requests"] == 100 and s["errors"] == 10
    assert s["errors_by_kind"] == {"RateLimited": 5, "ServerError": 5}
    assert s["throughput_rps"] == pytest.approx(9.0)
    assert s["output_tokens_per_s"] == pytest.approx(90 * 5 / 10.0)
    assert s["cache"] == {"hits": 25, "misses": 75, "hit_rate": 0.25, "by_tier": {"memory": 25}}
    assert s["tokens"] == {"prompt": 1000, "completion": 450, "total": 1450}
    assert s["retries"] == 20
    assert s["stages"]["llm_call"]["mean"] == pytest.approx(0.15)
    assert s["latency_s"]["max"] == pytest.approx(0.299)
    assert s["scheduling_lag_s"]["p99"] == pytest.approx(0.001)
    # goodput: ok and latency <= 0.25 -> i in 0..50 and not i % 10 == 0
    good = sum(1 for i in range(100) if i % 10 and 0.2 + i * 0.001 <= 0.25)
    assert s["goodput"]["good_requests"] == good
    assert len(s["samples_s"]) == 100 and len(s["timeline"]) == 100


def test_summarize_caps_raw_samples() -> None:
    s = summarize("x", _samples(), 10.0, sample_cap=10)
    assert len(s.samples_s) == 10 and len(s.timeline) == 10
    assert s.latency_s.count == 100  # statistics still over every sample


def test_mann_whitney_detects_shift_and_not_equal_draws() -> None:
    rng = random.Random(0)
    a = [rng.gauss(1.0, 0.1) for _ in range(200)]
    b = [rng.gauss(1.0, 0.1) for _ in range(200)]
    c = [x * 1.2 for x in a]
    assert mann_whitney_u(a, b)[1] > 0.01
    assert mann_whitney_u(a, c)[1] < 1e-6
    assert mann_whitney_u([1.0], [2.0]) == (0.0, 1.0)


class _Usage:
    prompt_tokens = 7
    completion_tokens = 4


class _Stage:
    def __init__(self, name: str, d: float) -> None:
        self.name, self.start_s, self.duration_s = name, 0.0, d


class _Result:
    ok = False
    error = TimeoutError("slow")
    ttft_s = 0.2
    total_s = 0.5
    usage = _Usage()
    cache_tier = "disk"
    attempts = 2
    stages: ClassVar[list[_Stage]] = [_Stage("llm_call", 0.4), _Stage("post_process", 0.05)]


def test_adapters_are_duck_typed() -> None:
    s = sample_from_pipeline_result(_Result(), scheduled_s=1.0, start_s=1.1)
    assert s.end_s == pytest.approx(1.6) and s.first_token_s == pytest.approx(1.3)
    assert not s.ok and s.error_kind == "TimeoutError" and s.cache_tier == "disk"
    assert (s.prompt_tokens, s.completion_tokens, s.retries) == (7, 4, 1)
    assert s.stages == {"llm_call": 0.4, "post_process": 0.05}

    class _Resp:
        ttft_s, total_s, usage, cache_tier, attempts = 0.1, 0.4, None, None, 1
        chunk_times_s: ClassVar[list[float]] = [0.1, 0.2, 0.3]

    r = sample_from_llm_response(_Resp(), scheduled_s=0.0, start_s=0.0)
    assert r.completion_tokens == 3 and r.itl_s == pytest.approx(0.1)
