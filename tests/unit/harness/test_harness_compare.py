"""Baseline comparison: thresholds, significance, messages."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_iterate.harness.compare import BaselineMissing, compare, load_baseline, parse_rule
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import Report, ScenarioSummary

RULES = ["p95:10%", "mean:5%", "error_rate:+0.5"]


def _report(seed: int, scale: float = 1.0, n: int = 400, errors: int = 0) -> Report:
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        lat = rng.lognormvariate(-3, 0.5) * scale
        samples.append(
            RequestSample(
                scheduled_s=i * 0.01,
                start_s=i * 0.01,
                end_s=i * 0.01 + lat,
                ok=i >= errors,
                error_kind=None if i >= errors else "ServerError",
            )
        )
    return Report.build({}, [], [summarize("closed:5", samples, n * 0.01)])


def _only(name: str, throughput_rps: float) -> Report:
    return Report.build({}, [], [ScenarioSummary(name=name, requests=1, throughput_rps=throughput_rps)])


def test_identical_runs_pass() -> None:
    r = _report(1)
    result = compare(r, r, RULES)
    assert result.passed and len(result.rows) == 3
    assert "RESULT: pass" in result.table()


def test_injected_30_percent_p95_regression_fails() -> None:
    result = compare(_report(1), _report(2, scale=1.3), ["p95:10%"])
    assert not result.passed
    (row,) = result.regressions
    assert row.rule == "p95:10%" and row.significant and row.delta_rel == pytest.approx(0.3, abs=0.12)
    assert "REGRESSION (significant" in result.table()


@pytest.mark.parametrize("seed", range(10))
def test_runs_differing_only_by_noise_pass(seed: int) -> None:
    assert compare(_report(100 + seed), _report(200 + seed), RULES).passed


def test_over_threshold_but_within_noise_is_not_a_regression() -> None:
    # Tiny runs: p95 jumps around by more than 10 % from noise alone.
    base, cur = _report(7, n=20), _report(8, n=20)
    result = compare(base, cur, ["p95:0%", "p95:10%"])
    exceeded = [r for r in result.rows if r.exceeded]
    assert exceeded, "the seeds were chosen so that noise exceeds the threshold"
    assert all(r.significant is False and not r.regression for r in exceeded)
    assert "within noise" in result.table()


def test_without_samples_the_threshold_alone_decides() -> None:
    base, cur = (
        Report.build({}, [], [s.replace(samples_s=()) for s in r.scenarios])
        for r in (_report(1), _report(2, scale=1.3))
    )
    result = compare(base, cur, ["p95:10%"])
    assert not result.passed and result.regressions[0].significant is None
    assert "no samples" in result.table()


def test_error_rate_rule_is_in_percentage_points() -> None:
    base = _report(1, errors=0)
    assert compare(base, _report(1, errors=1), ["error_rate:+0.5"]).passed  # +0.25 points
    bad = compare(base, _report(1, errors=40), ["error_rate:+0.5"])  # +10 points
    assert not bad.passed and bad.regressions[0].significant


def test_throughput_drop_is_the_bad_direction() -> None:
    base = _only("s", 100.0)
    assert compare(base, _only("s", 150.0), ["throughput:10%"]).passed
    assert not compare(base, _only("s", 80.0), ["throughput:10%"]).passed


def test_missing_scenarios_are_listed_not_failed() -> None:
    base = _report(1)
    cur = Report.build({}, [], [base.scenarios[0].replace(name="other")])
    result = compare(base, cur, RULES)
    assert result.passed and result.missing == ["closed:5", "other"]
    assert "only one report" in result.table()


@pytest.mark.parametrize("bad", ["p95", "p95:", "p95:abc%", "latency:10%", "p95:-5%"])
def test_bad_rules_name_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="bad rule") as info:
        parse_rule(bad)
    assert repr(bad) in str(info.value)


def test_parse_rule_forms() -> None:
    assert parse_rule("p95:10%").limit == pytest.approx(0.1) and parse_rule("p95:10%").relative
    assert parse_rule("error_rate:+0.5").limit == pytest.approx(0.005)
    assert parse_rule("ttft_s.p95:20%").path == ("ttft_s", "p95")
    assert parse_rule("p99.9:5%").path == ("latency_s", "p99_9")


def test_missing_baseline_is_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(BaselineMissing, match=r"no baseline report at .*nothing to compare"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "iterate-report.json").write_text(json.dumps(_report(1).to_json()))
    assert load_baseline(tmp_path).scenarios[0].name == "closed:5"
