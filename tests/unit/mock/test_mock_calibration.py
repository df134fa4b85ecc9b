"""The v1 profile stays calibrated: 2.3 s +- 5 % per uncached call over the standard workload.

Computed, not timed: analytically from the profile's means and on virtual time through
the core. ``scripts/measure_mock_llm_call.py`` measures the same mean through the client
over loopback (fixtures/profiles/README.md records a run).
"""

from __future__ import annotations

import dataclasses

import pytest

from pytest_iterate.doubles.mock.calibration import expected_mean_call_s, standard_bodies, virtual_mean_call_s
from pytest_iterate.doubles.mock.profiles import Distribution, LatencyProfile, load_profile

V1_LLM_CALL_S = 2.3  # the seeds' V1 table: "LLM request (single) 2.3 s"


@pytest.fixture(scope="module")
def bodies() -> list[dict[str, object]]:
    return standard_bodies()


def test_the_calibration_set_is_the_standard_workload_as_the_pipeline_builds_it(bodies: list) -> None:
    assert len(bodies) == 70
    budgets = sorted(b["max_tokens"] for b in bodies)
    assert budgets.count(128) == 17 and budgets.count(512) == 26  # most answers are cut below ~380 tokens
    assert all(not b.get("stream") for b in bodies)


def test_v1_expected_mean_call_over_the_standard_workload_is_2_3_s(bodies: list) -> None:
    mean = expected_mean_call_s(load_profile("v1"), bodies)
    assert mean == pytest.approx(V1_LLM_CALL_S, rel=0.05), f"analytic mean {mean:.3f} s"


@pytest.mark.parametrize("seed", [0, 1])
async def test_v1_mean_call_on_virtual_time_is_2_3_s(bodies: list, seed: int) -> None:
    v1 = load_profile("v1")
    mean = await virtual_mean_call_s(v1, bodies, seed)
    assert mean == pytest.approx(V1_LLM_CALL_S, rel=0.05), f"virtual-time mean {mean:.3f} s (seed {seed})"
    # the analytic model and the core agree (answer lengths vary ~2 % between seeds)
    assert mean == pytest.approx(expected_mean_call_s(v1, bodies), rel=0.04)


def test_the_check_catches_the_old_profile(bodies: list) -> None:
    # before calibration (itl 5.2 ms) the workload's cut answers made a call 1.86 s
    v1 = load_profile("v1")
    old = dataclasses.replace(v1, itl=Distribution("lognormal", 0.0052, 0.0012, min=0.002, max=0.02))
    assert expected_mean_call_s(old, bodies) < V1_LLM_CALL_S * 0.95


def test_expected_total_accounts_for_max_tokens() -> None:
    p = LatencyProfile(
        "p",
        itl=Distribution("fixed", 0.01),
        output_tokens=Distribution("normal", 100.0, 20.0, min=50, max=150),
    )
    assert p.expected_output_tokens() == pytest.approx(100.0, abs=0.01)
    assert p.expected_output_tokens(40) == 40.0  # every draw is cut
    assert 85.0 < p.expected_output_tokens(100) < 100.0  # the upper half is cut to 100
    assert p.expected_total_s(0, 40) == pytest.approx(0.39)
    assert p.expected_total_s(0) == pytest.approx(0.99, abs=0.001)
