"""The comparison's error rates on seeded samples drawn from the mock's latency profiles.

These are the numbers DEFINITIONS.md quotes (``python -m pytest_iterate.harness.gate_rates``
prints them): a rule must stay quiet on identical runs and catch a uniform 30 % slowdown.
Deterministic: every pair is drawn from its own seeded generator.
"""

from __future__ import annotations

import pytest

from pytest_iterate.doubles.mock.profiles import load_profile
from pytest_iterate.harness.compare import compare
from pytest_iterate.harness.gate_rates import _report, draw, flag_rate, workload

PAIRS = 400


@pytest.mark.parametrize("paired", [True, False], ids=["same-requests", "different-requests"])
@pytest.mark.parametrize("profile", ["v1", "degraded"])
@pytest.mark.parametrize("rule", ["mean:10%", "p95:10%"])
def test_identical_runs_raise_at_most_one_percent_false_alarms(profile: str, rule: str, paired: bool) -> None:
    rate = flag_rate(profile, rule, n=40, pairs=PAIRS, paired=paired)
    assert rate.rate <= 0.01, rate


@pytest.mark.parametrize("rule", ["mean:10%", "p95:10%"])
def test_a_uniform_30_percent_slowdown_is_caught_95_percent_of_the_time_with_40_samples(rule: str) -> None:
    rate = flag_rate("v1", rule, n=40, pairs=PAIRS, slowdown=1.3)
    assert rate.rate >= 0.95, rate


def test_runs_of_the_same_requests_are_compared_request_by_request() -> None:
    import random

    profile = load_profile("v1")
    rng = random.Random(7)
    tokens = workload(profile, 40, rng)
    base, cur = _report(draw(profile, tokens, rng), True), _report(draw(profile, tokens, rng, 1.3), True)
    (row,) = compare(base, cur, ["mean:10%"]).rows
    assert row.regression and row.method == "paired over 40 requests"
    unkeyed = compare(
        _report(draw(profile, tokens, rng), False),
        _report(draw(profile, tokens, rng, 1.3), False),
        ["mean:10%"],
    )
    assert unkeyed.rows[0].method == "rank and log-t tests"


def test_a_larger_sample_catches_what_a_noisy_profile_hides_at_40() -> None:
    small = flag_rate("degraded", "p95:10%", n=40, pairs=100, slowdown=1.3)
    large = flag_rate("degraded", "p95:10%", n=400, pairs=100, slowdown=1.3)
    assert small.rate < 0.9 <= large.rate, (small, large)
