"""Per-session state of the plugin: criteria outcomes, benchmark runs, reports, gates.

One :class:`IterateSession` lives in ``config.stash[SESSION_KEY]`` (never a global)
when ``--iterate`` is on. Acceptance tests call :meth:`IterateSession.check_criterion`;
``iterate_bench`` calls :meth:`IterateSession.add_bench`. At the end of the session
the controller (or the only process) builds the report with ``pytest_iterate.harness.reports``,
writes it, applies the baseline gate and prints the terminal summary. Under
pytest-xdist each worker ships its outcomes to the controller in ``workeroutput``
(:meth:`to_wire` / :meth:`merge_wire`), so no result is lost.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_iterate.acceptance.criteria import CRITERIA_BY_ID
from pytest_iterate.plugin.options import IterateOptions

if TYPE_CHECKING:
    from pytest_iterate.acceptance.scenarios import ScenarioRunner

__all__ = ["OPTIONS_KEY", "SESSION_KEY", "IterateSession", "get_options", "get_session"]

SESSION_KEY = pytest.StashKey["IterateSession"]()
OPTIONS_KEY = pytest.StashKey[IterateOptions]()


def get_session(config: pytest.Config) -> IterateSession | None:
    return config.stash.get(SESSION_KEY, None)


def get_options(config: pytest.Config) -> IterateOptions:
    """The session's resolved options (resolved now if the plugin has not done it yet)."""
    if OPTIONS_KEY not in config.stash:
        from pytest_iterate.plugin.options import resolve

        config.stash[OPTIONS_KEY] = resolve(config)
    return config.stash[OPTIONS_KEY]


def _num(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.4g} {unit}".strip()


class IterateSession:
    """What one ``pytest --iterate`` run measured and decided."""

    def __init__(self, config: pytest.Config, options: IterateOptions) -> None:
        self.config = config
        self.options = options
        self.criteria: list[dict[str, Any]] = []
        self.bench: list[dict[str, Any]] = []
        self.scenario_summaries: list[dict[str, Any]] = []  # from xdist workers
        self.report_paths: list[Path] = []
        self.messages: list[str] = []
        self.comparison: str | None = None
        self.gate_failed = False
        self._runner: ScenarioRunner | None = None

    # -- scenarios and criteria --------------------------------------------------------
    @property
    def runner(self) -> ScenarioRunner:
        if self._runner is None:
            from pytest_iterate.acceptance.scenarios import ScenarioRunner

            pyproject = self.config.rootpath / "pyproject.toml"
            self._runner = ScenarioRunner(self.options, pyproject=pyproject if pyproject.is_file() else None)
        return self._runner

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()

    def check_criterion(self, criterion_id: str, node: pytest.Item) -> None:
        """Measure one criterion (its scenario runs once), record it, fail or skip the test.

        Observed value, threshold and unit go to ``node.user_properties`` (what
        ``record_property`` does, without its xunit2 warning): ``--junitxml`` writes them.
        """
        from pytest_iterate.acceptance.scenarios import NeedsMock, NoMeasurement

        crit = CRITERIA_BY_ID[criterion_id]
        threshold = self.options.threshold_for(criterion_id)
        row: dict[str, Any] = {"id": crit.id, "threshold": threshold, "unit": crit.unit,
                               "direction": crit.direction, "title": crit.title, "observed": None,
                               "passed": False, "scenario": crit.scenario}
        nothing: str | None = None
        try:
            observed, scenario = self.runner.observe(criterion_id)
        except NeedsMock as exc:
            row.update(passed=None, skipped=True, note=str(exc))
            self.criteria.append(row)
            pytest.skip(f"{criterion_id}: {exc}")
        except NoMeasurement as exc:
            nothing = str(exc)
        except Exception as exc:
            row.update(note=f"scenario {crit.scenario!r} failed: {type(exc).__name__}: {exc}")
            self.criteria.append(row)
            raise
        if nothing is not None:  # failed outside the except block: no chained traceback
            row.update(note=nothing)
            self.criteria.append(row)
            pytest.fail(f"{criterion_id}: nothing measured: {nothing}", pytrace=False)
        passed = crit.passes(observed, threshold)
        note = scenario.notes.get(criterion_id, "")
        row.update(observed=_num(observed), passed=passed, note=note)
        self.criteria.append(row)
        node.user_properties.append((f"{criterion_id}.observed", _num(observed)))
        node.user_properties.append((f"{criterion_id}.threshold", threshold))
        node.user_properties.append((f"{criterion_id}.unit", crit.unit))
        if not passed:
            pytest.fail(
                f"{criterion_id} failed: observed {_fmt(_num(observed), crit.unit)}, "
                f"threshold {crit.direction} {_fmt(threshold, crit.unit)}" + (f" ({note})" if note else ""),
                pytrace=False,
            )

    def add_bench(self, summary: dict[str, Any]) -> None:
        self.bench.append(summary)

    # -- xdist --------------------------------------------------------------------------
    def to_wire(self) -> str:
        scenarios = self.runner.summaries() if self._runner is not None else []
        return json.dumps({"criteria": self.criteria, "bench": self.bench, "scenarios": scenarios},
                          default=str)

    def merge_wire(self, data: str) -> None:
        payload = json.loads(data)
        self.criteria.extend(payload.get("criteria", []))
        self.bench.extend(payload.get("bench", []))
        self.scenario_summaries.extend(payload.get("scenarios", []))

    # -- end of session -----------------------------------------------------------------
    def build_report(self) -> dict[str, Any]:
        from pytest_iterate.harness.reports import build_report

        opts = self.options
        scenarios = list(self.scenario_summaries)
        if self._runner is not None:
            scenarios.extend(self._runner.summaries())
        scenarios.extend(self.bench)
        seen: dict[str, int] = {}
        for scenario in scenarios:  # the same scenario measured by two xdist workers: keep both
            name = str(scenario.get("name"))
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                scenario["name"] = f"{name}@{seen[name]}"
        run = {"tool": "pytest-iterate", "endpoint": opts.endpoint, "model": opts.model,
               "profile": opts.profile if opts.is_mock else None, "workload": opts.workload or "standard",
               "concurrency": ",".join(map(str, opts.concurrency))}
        order = {cid: i for i, cid in enumerate(CRITERIA_BY_ID)}
        criteria = sorted(self.criteria, key=lambda c: order.get(c["id"], len(order)))
        return build_report({k: v for k, v in run.items() if v is not None}, criteria, scenarios)

    def finish(self) -> int | None:
        """Write the reports and apply the baseline gate; an exit code to force, or None."""
        if not self.criteria and not self.bench and not self.scenario_summaries:
            self.messages.append("no acceptance criterion or iterate_bench run: no report written")
            return None
        from pytest_iterate.harness.reports import write_reports

        report = self.build_report()
        self.report_paths = write_reports(report, self.options.report_dir)
        force = self._gate(report)
        if self.options.save_baseline is not None:
            target = self.options.save_baseline
            if target.is_dir() or not target.suffix:
                target = target / "iterate-report.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.options.report_dir / "iterate-report.json", target)
            self.messages.append(f"baseline saved: {target}")
        return force

    def _gate(self, report: dict[str, Any]) -> int | None:
        if self.options.baseline is None:
            if self.options.compare_fail:
                self.messages.append("--iterate-compare-fail given without --iterate-baseline: no comparison")
            return None
        from pytest_iterate.harness.compare import BaselineMissing, compare, load_baseline

        try:
            baseline = load_baseline(self.options.baseline)
        except BaselineMissing as exc:
            self.messages.append(str(exc))
            return None
        rules = list(self.options.compare_fail) or ["mean:10%", "p95:10%"]
        result = compare(baseline, report, rules)
        self.comparison = result.table()
        if self.options.compare_fail and not result.passed:
            self.gate_failed = True
            names = ", ".join(f"{r.scenario} {r.rule}" for r in result.regressions)
            self.messages.append(f"regression gate FAILED against {self.options.baseline}: {names}")
            return int(pytest.ExitCode.TESTS_FAILED)
        return None

    def terminal_summary(self, tr: Any) -> None:
        tr.write_sep("=", "pytest-iterate")
        if self.criteria:
            width = max(len(c["id"]) for c in self.criteria)
            for c in sorted(self.criteria, key=lambda c: list(CRITERIA_BY_ID).index(c["id"])
                            if c["id"] in CRITERIA_BY_ID else 99):
                verdict = "SKIP" if c.get("skipped") else ("PASS" if c.get("passed") else "FAIL")
                observed = _fmt(c.get("observed"), c["unit"])
                tr.write_line(f"{c['id']:<{width}}  {verdict:<4}  observed {observed:>14}"
                              f"  threshold {c['direction']} {_fmt(c['threshold'], c['unit'])}")
        for b in self.bench:
            lat = b.get("latency_s") or {}
            tr.write_line(f"bench {b.get('name')}: {b.get('requests')} requests, mean "
                          f"{_fmt(lat.get('mean'), 's')}, p95 {_fmt(lat.get('p95'), 's')}, "
                          f"error rate {b.get('error_rate', 0):.2%}")
        if self.comparison:
            tr.write_line(self.comparison)
        for message in self.messages:
            tr.write_line(message)
        for path in self.report_paths:
            tr.write_line(f"report: {path}")
