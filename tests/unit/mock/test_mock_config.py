"""Profiles, distributions, fault plans and rate-limit buckets of the mock endpoint."""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics

import pytest

from pytest_iterate.client.errors import ConfigError
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.faults import FAULT_KINDS, FaultPlan, parse_fault
from pytest_iterate.doubles.mock.profiles import (
    Distribution,
    LatencyProfile,
    load_profile,
    profiles_dir,
    shipped_profiles,
)
from pytest_iterate.doubles.mock.ratelimit import RateLimiter, format_reset


def test_shipped_profiles_load_and_v1_is_about_2_9_s_uncut() -> None:
    assert {"v1", "fast", "degraded", "zero"} <= set(shipped_profiles())
    v1 = load_profile("v1")
    assert 2.7 <= v1.expected_total_s(200) <= 3.1  # ~380 tokens uncut; 2.3 s over the standard workload
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


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(59.9999, "1m0s"), (0.9999, "1s"), (3599.9999, "1h0m0s"), (0.0001, "1ms"), (1.0004, "1.001s")],
)
def test_format_reset_rolls_over_and_never_promises_a_unit_early(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_a_list_of_prompts_is_charged_max_tokens_for_each_answer() -> None:
    rl = RateLimiter(tokens_per_min=10_000, clock=lambda: 0.0)
    core = MockLLM("zero", rate_limit=rl)
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b", "c", "d"], "max_tokens": 100}
    reply = asyncio.run(core.handle("POST", "/v1/completions", {}, json.dumps(body).encode()))
    assert reply.status == 200
    assert 10_000 - int(reply.headers["x-ratelimit-remaining-tokens"]) == 4 + 4 * 100


def test_a_refusal_is_worded_as_openai_words_it() -> None:
    rl = RateLimiter(tokens_per_min=1000, clock=lambda: 0.0, used_tokens=900)
    core = MockLLM("zero", rate_limit=rl)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
    reply = asyncio.run(core.handle("POST", "/v1/chat/completions", {}, json.dumps(body).encode()))
    error = json.loads(reply.body)["error"]
    assert reply.status == 429 and error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith(
        "Rate limit reached for gpt-4o-mini in organization org-mock on tokens per min (TPM): "
        "Limit 1000, Used 900, Requested 208. Please try again in 6.48s."
    )
    assert reply.headers["retry-after-ms"] == "6480" and reply.headers["retry-after"] == "7"


def test_a_bucket_can_start_partly_spent_and_bad_starts_are_refused() -> None:
    rl = RateLimiter(
        requests_per_min=60, tokens_per_min=6000, clock=lambda: 0.0, used_requests=50, used_tokens=6000
    )
    assert rl.headers()["x-ratelimit-remaining-requests"] == "10"
    assert rl.headers()["x-ratelimit-remaining-tokens"] == "0"
    with pytest.raises(
        ConfigError, match=r"used_requests=61 is out of range; give a number between 0 and the limit \(60\)"
    ):
        RateLimiter(requests_per_min=60, used_requests=61)
    with pytest.raises(
        ConfigError, match="used_tokens=5 is out of range; give a number 0 without that limit"
    ):
        RateLimiter(requests_per_min=60, used_tokens=5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"output_tokens": 1e9}',
            r"output_tokens = 1000000000.0 is out of range; accepted: 0 <= output_tokens <= 100000",
        ),
        (
            '{"output_tokens": {"dist": "normal", "mean": 380, "std": 80, "max": 5e6}}',
            r"output_tokens.max = 5000000.0 is out of range; accepted: 0 <= output_tokens.max <= 100000",
        ),
        ('{"itl_s": -0.01}', r"itl_s = -0.01 is out of range; accepted: 0 <= itl_s <= 60"),
        (
            '{"ttft_base_s": {"dist": "lognormal", "mean": 0.3, "std": 0.1, "min": -1}}',
            r"ttft_base_s.min = -1.0 is out of range; accepted: 0 <= ttft_base_s.min <= 600",
        ),
        ('{"itl_s": NaN}', r"itl_s = nan is not a finite number; accepted: 0 <= itl_s <= 60"),
        (
            '{"ttft_base_s": {"dist": "normal", "mean": 0.3, "std": Infinity}}',
            r"ttft_base_s.std = inf is not a finite number; accepted: 0 <= ttft_base_s.std <= 600",
        ),
        ('{"capacity": 1e999}', r"capacity = inf is not a finite number; accepted: 1 <= capacity <= 1000000"),
        ('{"capacity": 2.5}', r"capacity = 2.5 is not a whole number"),
        ('{"capacity": "many"}', r"capacity = 'many' is not a number"),
        (
            '{"context_window": 0}',
            r"context_window = 0 is out of range; accepted: 1 <= context_window <= 10000000",
        ),
        (
            '{"prefill_per_token_s": 5}',
            r"prefill_per_token_s = 5 is out of range; accepted: 0 <= prefill_per_token_s <= 1",
        ),
        ('{"load_slowdown": true}', r"load_slowdown = True is not a number"),
        ('{"models": []}', r"models = \[\] is not a list of 1 to 1000 non-empty model names"),
        ('{"models": ["a", 3]}', r"models = \['a', 3\] is not a list"),
    ],
)
def test_profile_values_out_of_range_name_the_file_the_key_and_the_range(
    tmp_path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(f"mock profile file {str(path)!r}: ") + message):
        load_profile(path)


def test_profiles_built_in_code_are_checked_too_and_draws_stay_in_range() -> None:
    with pytest.raises(
        ConfigError, match=r"mock profile 'x': capacity = 0 is out of range; accepted: 1 <= capacity"
    ):
        LatencyProfile("x", capacity=0)
    with pytest.raises(ConfigError, match=r"mock profile 'x': output_tokens = 200000.0 is out of range"):
        LatencyProfile("x", output_tokens=Distribution("fixed", 200_000.0))
    with pytest.raises(ConfigError, match="distribution std must be a finite number, got nan"):
        Distribution("normal", 0.01, float("nan"))
    # a normal without min/max: draws are clamped to the key's range (no negative latency)
    p = LatencyProfile(
        "wide",
        ttft_base=Distribution("normal", 0.1, 0.5),
        output_tokens=Distribution("normal", 90_000.0, 50_000.0),
    )
    rng = random.Random(5)
    ttfts = [p.ttft_base.sample(rng) for _ in range(2000)]
    sizes = [p.output_tokens.sample(rng) for _ in range(2000)]
    assert min(ttfts) == 0.0 and max(sizes) == 100_000.0 and min(sizes) >= 0.0


def test_the_shipped_profiles_pass_the_checks_unchanged() -> None:
    for name in shipped_profiles():
        raw = json.loads((profiles_dir() / f"{name}.json").read_text())
        profile = load_profile(name)
        for key, attr in (("ttft_base_s", "ttft_base"), ("itl_s", "itl"), ("output_tokens", "output_tokens")):
            spec = raw.get(key)
            if isinstance(spec, dict) and spec.get("std"):
                dist = getattr(profile, attr)
                assert (dist.min, dist.max) == (spec["min"], spec["max"]), (name, key)  # nothing re-clamped
