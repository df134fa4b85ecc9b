"""Profiles, distributions, fault plans and rate-limit buckets of the mock endpoint."""

from __future__ import annotations

import json
import random
import statistics

import pytest

from pytest_iterate.client.errors import ConfigError
from pytest_iterate.doubles.mock.faults import FAULT_KINDS, FaultPlan, parse_fault
from pytest_iterate.doubles.mock.profiles import Distribution, LatencyProfile, load_profile, shipped_profiles
from pytest_iterate.doubles.mock.ratelimit import RateLimiter, format_reset


def test_shipped_profiles_load_and_v1_is_about_2_3_s() -> None:
    assert {"v1", "fast", "degraded", "zero"} <= set(shipped_profiles())
    v1 = load_profile("v1")
    assert 2.1 <= v1.expected_total_s(200) <= 2.5
    assert load_profile("fast").expected_total_s(200) < 0.02
    assert load_profile("zero").is_zero and not v1.is_zero
    assert load_profile("degraded").expected_total_s(200) > v1.expected_total_s(200)


def test_unknown_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown mock profile 'nope'.*degraded, fast, v1, zero"):
        load_profile("nope")


def test_profile_from_a_file_and_bad_keys(tmp_path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"ttft_base_s": 0.1, "itl_s": {"dist": "fixed", "mean": 0.01}, "capacity": 2}))
    p = load_profile(path)
    assert p.name == "mine" and p.capacity == 2 and p.expected_ttft_s(0) == pytest.approx(0.1)
    path.write_text(json.dumps({"ttft": 0.1}))
    with pytest.raises(ConfigError, match="unknown keys"):
        load_profile(path)
    with pytest.raises(ConfigError, match="kind 'weird'"):
        Distribution.from_json({"dist": "weird", "mean": 1})


@pytest.mark.parametrize(
    "dist",
    [
        Distribution("normal", 10.0, 3.0, min=0.0, max=30.0),
        Distribution("lognormal", 0.3, 0.2, min=0.05, max=1.0),
        Distribution("normal", 5.0, 4.0, min=4.0),  # heavily clamped: mean() must account for it
    ],
)
def test_sample_mean_matches_the_clamped_expected_mean(dist: Distribution) -> None:
    rng = random.Random(3)
    draws = [dist.sample(rng) for _ in range(40_000)]
    assert min(draws) >= (dist.min if dist.min is not None else -1e9)
    assert max(draws) <= (dist.max if dist.max is not None else 1e9)
    assert statistics.fmean(draws) == pytest.approx(dist.mean(), rel=0.02)


def test_slowdown_grows_with_load() -> None:
    p = LatencyProfile("x", capacity=5, load_slowdown=1.0)
    assert p.slowdown(1) == 1.0 and p.slowdown(3) == pytest.approx(1.5) and p.slowdown(5) == 2.0
    assert p.slowdown(50) == 2.0


def test_fault_specs_parse_and_bad_ones_fail_clearly() -> None:
    assert parse_fault("429=0.02") == ("429", 0.02)
    assert parse_fault("7:stream_cut") == ("stream_cut", 7)
    plan = FaultPlan.parse(["429=0.02", "503=0.01", "2:hang"], retry_after_s=0.5)
    assert plan.rates == {"429": 0.02, "503": 0.01} and plan.script == {2: "hang"}
    for bad, why in [
        ("418=0.1", "unknown fault kind '418'"),
        ("429=x", "not a number"),
        ("429=1.5", "between 0 and 1"),
        ("0:reset", ">= 1"),
        ("reset", "neither"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_fault(bad)
    with pytest.raises(ConfigError, match="add up to"):
        FaultPlan({"429": 0.7, "503": 0.6})


def test_fault_pick_follows_script_then_rates() -> None:
    plan = FaultPlan({"503": 0.25}, script={3: "reset"})
    picks = [plan.pick(i, random.Random(f"1:{i}")) for i in range(1, 4001)]
    assert picks[2] == "reset"
    assert set(picks) <= {None, "503", "reset"}
    assert 0.22 < picks.count("503") / 4000 < 0.28
    assert set(FAULT_KINDS) >= {
        "429",
        "hang",
        "reset",
        "malformed_json",
        "stream_cut",
        "stream_error",
        "empty_choices",
    }


def test_rate_limiter_headers_refill_and_refusal() -> None:
    now = [0.0]
    rl = RateLimiter(requests_per_min=3, tokens_per_min=600, clock=lambda: now[0])
    first = rl.take(100)
    assert first.allowed
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-tokens"] == "500"
    assert first.headers["x-ratelimit-reset-tokens"] == "10s"
    assert rl.take(100).allowed and rl.take(100).allowed
    refused = rl.take(100)
    assert not refused.allowed and refused.exceeded == "requests"
    assert refused.retry_after_s == pytest.approx(20.0)  # one request back after 60/3 s
    now[0] = 20.0
    assert rl.take(100).allowed
    too_big = RateLimiter(tokens_per_min=600, clock=lambda: now[0])
    assert too_big.take(500).allowed and not too_big.take(500).allowed


def test_format_reset_style() -> None:
    assert format_reset(360) == "6m0s"
    assert format_reset(0.012) == "12ms"
    assert format_reset(1.5) == "1.5s"
    assert format_reset(3725) == "1h2m5s"
    assert format_reset(0) == "0s"
