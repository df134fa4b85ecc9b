"""Baseline comparison: limits, significance, the noise floor, gating, incomplete reports."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_iterate.harness.compare import (
    BaselineMissing,
    IncompleteReport,
    compare,
    load_baseline,
    parse_rule,
)
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import Report, ScenarioSummary

RULES = ["p95:10%", "mean:5%", "error_rate:+0.5"]


def _latencies(seed: int, n: int, scale: float = 1.0, sigma: float = 0.3) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(0.8, sigma) * scale for _ in range(n)]  # ~2.3 s, like the v1 profile


def _scenario(name: str, latencies: list[float], errors: int = 0) -> ScenarioSummary:
    samples = [
        RequestSample(
            scheduled_s=i * 0.01,
            start_s=i * 0.01,
            end_s=i * 0.01 + lat,
            ok=i >= errors,
            error_kind=None if i >= errors else "ServerError",
        )
        for i, lat in enumerate(latencies)
    ]
    return summarize(name, samples, len(latencies) * 0.01)


def _report(*scenarios: ScenarioSummary, **run: str | int) -> Report:
    return Report.build({"model": "m", **run}, [], scenarios)


def test_identical_runs_pass_and_the_table_shows_units() -> None:
    r = _report(_scenario("standard", _latencies(1, 400)))
    result = compare(r, r, RULES)
    assert result.passed and len(result.rows) == 3
    table = result.table()
    assert "RESULT: pass" in table and " s " in table and "%" in table


def test_a_uniform_slowdown_fails_naming_scenario_rule_values_delta_and_p() -> None:
    base = _report(_scenario("standard", _latencies(1, 400)))
    cur = _report(_scenario("standard", _latencies(2, 400, scale=1.3)))
    result = compare(base, cur, ["p95:10%", "mean:10%"])
    assert [r.rule.text for r in result.regressions] == ["p95:10%", "mean:10%"]
    line = result.regressions[0].failure_line()
    assert line.startswith("standard p95:10%: baseline ") and "current " in line and "delta +" in line
    assert "p=" in line and "%)" in line
    assert "REGRESSION standard p95:10%" in result.table()


def test_a_tail_that_grew_while_the_bulk_did_not_is_caught_by_the_percentile_test() -> None:
    base_lat = _latencies(1, 2000)
    tail = sorted(base_lat)[int(0.93 * len(base_lat))]
    cur_lat = [v * 2.0 if v >= tail else v for v in _latencies(1, 2000)]  # only the slowest 7 % slowed
    result = compare(
        _report(_scenario("s", base_lat)), _report(_scenario("s", cur_lat)), ["p95:10%", "p50:10%"]
    )
    ((row,), p50) = result.regressions, result.rows[1]
    assert row.rule.text == "p95:10%" and "permutation test of p95" in row.method
    assert not p50.regression


def test_noise_below_the_absolute_floor_never_fires() -> None:
    # a cache-hit run: ~10 ms, 30 % slower is 3 ms, under the default 5 ms floor
    base = _report(_scenario("repeat", [v / 230 for v in _latencies(1, 400)]))
    cur = _report(_scenario("repeat", [v / 230 * 1.3 for v in _latencies(2, 400)]))
    result = compare(base, cur, ["p95:10%", "mean:10%"])
    assert result.passed and all("noise floor" in r.note for r in result.rows)
    assert not compare(base, cur, ["p95:10%"], min_delta_s=0.0).passed  # the floor is what held it


def test_a_scenario_marked_not_gated_is_listed_with_its_reason_unless_a_rule_names_it() -> None:
    def cached(scale: float, seed: int) -> ScenarioSummary:
        return _scenario("repeat", _latencies(seed, 400, scale)).replace(
            gated=False, gate_note="every request was answered from the cache"
        )

    base = _report(cached(1.0, 1), _scenario("standard", _latencies(3, 400)))
    cur = _report(cached(2.0, 2), _scenario("standard", _latencies(4, 400)))
    result = compare(base, cur, ["p95:10%"])
    assert result.passed
    (row,) = [r for r in result.rows if r.scenario == "repeat"]
    assert row.verdict == "not gated: every request was answered from the cache"
    named = compare(base, cur, ["repeat.p95:10%"])
    assert [(r.scenario, r.regression) for r in named.rows] == [("repeat", True)]


def test_a_per_scenario_rule_applies_to_that_scenario_only() -> None:
    base = _report(_scenario("closed:5", _latencies(1, 400)), _scenario("standard", _latencies(3, 400)))
    cur = _report(
        _scenario("closed:5", _latencies(2, 400, 1.5)), _scenario("standard", _latencies(4, 400, 1.5))
    )
    result = compare(base, cur, ["closed:5.p95:10%"])
    assert [(r.scenario, r.regression) for r in result.rows] == [("closed:5", True)]


def test_too_few_samples_can_never_show_a_regression() -> None:
    base = _report(_scenario("concurrency_1", [2.0, 2.1]))
    cur = _report(_scenario("concurrency_1", [3.0, 3.2]))
    (row,) = compare(base, cur, ["p95:10%"]).rows
    assert not row.regression and "too few samples" in row.note


def test_without_samples_the_limit_alone_decides_and_says_so() -> None:
    def bare(seed: int, scale: float) -> Report:
        return _report(_scenario("s", _latencies(seed, 400, scale)).replace(samples_s=()))

    (row,) = compare(bare(1, 1.0), bare(2, 1.3), ["p95:10%"]).rows
    assert row.regression and row.p_value is None and row.note == "no raw samples"


def test_error_rate_rule_is_in_percentage_points() -> None:
    base = _report(_scenario("s", _latencies(1, 400), errors=0))
    assert compare(base, _report(_scenario("s", _latencies(1, 400), errors=1)), ["error_rate:+0.5"]).passed
    bad = compare(base, _report(_scenario("s", _latencies(1, 400), errors=40)), ["error_rate:+0.5"])
    assert not bad.passed and bad.regressions[0].method == "two-proportion z-test"


def test_throughput_drop_is_the_bad_direction() -> None:
    def only(rps: float) -> Report:
        return _report(ScenarioSummary(name="s", requests=10, throughput_rps=rps))

    assert compare(only(100.0), only(150.0), ["throughput:10%"]).passed
    assert not compare(only(100.0), only(80.0), ["throughput:10%"]).passed


def test_missing_scenarios_are_listed_not_failed() -> None:
    base = _report(_scenario("closed:5", _latencies(1, 100)))
    cur = _report(_scenario("other", _latencies(1, 100)))
    result = compare(base, cur, RULES)
    assert result.passed and result.missing == ["closed:5", "other"]
    assert "only one report" in result.table()


def test_an_incomplete_report_is_refused_on_either_side(tmp_path: Path) -> None:
    good = _report(_scenario("s", _latencies(1, 100)))
    partial = good.replace(complete=False, incomplete_reason="interrupted (KeyboardInterrupt)")
    for base, cur, side in ((partial, good, "baseline"), (good, partial, "current")):
        with pytest.raises(IncompleteReport, match=rf"the {side} report .* did not finish \(interrupted"):
            compare(base, cur, RULES)
    (tmp_path / "iterate-report.json").write_text(json.dumps(partial.to_json()))
    with pytest.raises(IncompleteReport, match="did not finish"):
        load_baseline(tmp_path)


def test_runs_set_up_differently_are_compared_with_a_warning() -> None:
    base = _report(_scenario("s", _latencies(1, 100)), profile="v1", workers=1)
    cur = _report(_scenario("s", _latencies(1, 100)), profile="fast", workers=2)
    result = compare(base, cur, RULES)
    assert result.warnings == [
        "the runs differ in profile: baseline 'v1', current 'fast'",
        "the runs differ in workers: baseline 1, current 2",
    ]
    assert "WARNING: the runs differ in profile" in result.table()


@pytest.mark.parametrize(
    "bad", ["p95", "p95:", "p95:abc%", "latency:10%", "p95:-5%", "p95:nan", "foo_s.p95:1%"]
)
def test_bad_rules_name_the_value(bad: str) -> None:
    with pytest.raises(ValueError, match="bad rule") as info:
        parse_rule(bad)
    assert repr(bad) in str(info.value)


def test_parse_rule_forms() -> None:
    assert parse_rule("p95:10%").limit == pytest.approx(0.1) and parse_rule("p95:10%").relative
    assert parse_rule("error_rate:+0.5").limit == pytest.approx(0.005)
    assert parse_rule("ttft_s.p95:20%").path == ("ttft_s", "p95")
    assert parse_rule("p99.9:5%").path == ("latency_s", "p99_9")
    assert parse_rule("stages.llm_call.mean:10%").path == ("stages.llm_call", "mean")
    rule = parse_rule("closed:5.p99.9:+0.05")
    assert (rule.scenario, rule.path, rule.limit, rule.relative) == (
        "closed:5",
        ("latency_s", "p99_9"),
        0.05,
        False,
    )


def test_missing_baseline_is_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(BaselineMissing, match=r"no baseline report at .*nothing to compare"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "iterate-report.json").write_text(json.dumps(_report(_scenario("closed:5", [1.0])).to_json()))
    assert load_baseline(tmp_path).scenarios[0].name == "closed:5"
