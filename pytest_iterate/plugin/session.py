"""Per-session state of ``pytest --iterate``: criteria outcomes, bench runs, reports, gates.

One :class:`IterateSession` lives in ``config.stash[SESSION_KEY]`` (see
:mod:`pytest_iterate.plugin.state`) when ``--iterate`` is on; the hooks import this
module only then. Acceptance tests call :meth:`IterateSession.check_criterion`;
``iterate_bench`` calls :meth:`IterateSession.add_bench`. At the end of the session the
controller (or the only process) builds the :class:`~pytest_iterate.harness.summary.Report`,
writes it, applies the baseline gate and prints the terminal summary. Under
pytest-xdist each worker ships its outcomes to the controller in ``workeroutput``
(:meth:`to_wire` / :meth:`merge_wire`, JSON), so no result is lost.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.harness.compare import BaselineMissing, compare, load_baseline
from pytest_iterate.harness.fmt import quantity
from pytest_iterate.harness.reports import write_reports
from pytest_iterate.harness.summary import CriterionResult, Report, ScenarioSummary
from pytest_iterate.plugin.acceptance.criteria import CRITERIA_BY_ID
from pytest_iterate.plugin.acceptance.scenarios import NeedsMock, NoMeasurement, ScenarioRunner
from pytest_iterate.plugin.options import IterateOptions

__all__ = ["IterateSession"]


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


class IterateSession:
    """What one ``pytest --iterate`` run measured and decided."""

    def __init__(self, config: pytest.Config, options: IterateOptions) -> None:
        self.config = config
        self.options = options
        self.criteria: list[CriterionResult] = []
        self.bench: list[ScenarioSummary] = []
        self.scenario_summaries: list[ScenarioSummary] = []  # from xdist workers
        self.report_paths: list[Path] = []
        self.messages: list[str] = []
        self.comparison: str | None = None
        self.gate_failed = False
        self._runner: ScenarioRunner | None = None

    # -- scenarios and criteria --------------------------------------------------------
    @property
    def runner(self) -> ScenarioRunner:
        if self._runner is None:
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
        crit = CRITERIA_BY_ID[criterion_id]
        threshold = self.options.threshold_for(criterion_id)
        row = CriterionResult(
            id=crit.id,
            threshold=threshold,
            unit=crit.unit,
            direction=crit.direction,
            title=crit.title,
            scenario=crit.scenario,
            passed=False,
        )
        nothing: str | None = None
        try:
            observed, scenario = self.runner.observe(criterion_id)
        except NeedsMock as exc:
            self.criteria.append(row.replace(passed=None, skipped=True, note=str(exc)))
            pytest.skip(f"{criterion_id}: {exc}")
        except NoMeasurement as exc:
            nothing = str(exc)
        except Exception as exc:
            self.criteria.append(
                row.replace(note=f"scenario {crit.scenario!r} failed: {type(exc).__name__}: {exc}")
            )
            raise
        if nothing is not None:  # failed outside the except block: no chained traceback
            self.criteria.append(row.replace(note=nothing))
            pytest.fail(f"{criterion_id}: nothing measured: {nothing}", pytrace=False)
        passed = crit.passes(observed, threshold)
        note = scenario.notes.get(criterion_id, "")
        self.criteria.append(row.replace(observed=_num(observed), passed=passed, note=note))
        node.user_properties.append((f"{criterion_id}.observed", _num(observed)))
        node.user_properties.append((f"{criterion_id}.threshold", threshold))
        node.user_properties.append((f"{criterion_id}.unit", crit.unit))
        if not passed:
            pytest.fail(
                f"{criterion_id} failed: observed {quantity(_num(observed), crit.unit)}, "
                f"threshold {crit.direction} {quantity(threshold, crit.unit)}"
                + (f" ({note})" if note else ""),
                pytrace=False,
            )

    def add_bench(self, summary: ScenarioSummary) -> None:
        self.bench.append(summary)

    # -- xdist --------------------------------------------------------------------------
    def to_wire(self) -> str:
        scenarios = self.runner.summaries() if self._runner is not None else []
        return json.dumps(
            {
                "criteria": [c.to_json() for c in self.criteria],
                "bench": [b.to_json() for b in self.bench],
                "scenarios": [s.to_json() for s in scenarios],
            }
        )

    def merge_wire(self, data: str) -> None:
        payload = json.loads(data)
        self.criteria.extend(CriterionResult.from_json(c) for c in payload.get("criteria", []))
        self.bench.extend(ScenarioSummary.from_json(b) for b in payload.get("bench", []))
        self.scenario_summaries.extend(ScenarioSummary.from_json(s) for s in payload.get("scenarios", []))

    # -- end of session -----------------------------------------------------------------
    def build_report(self) -> Report:
        opts = self.options
        scenarios = list(self.scenario_summaries)
        if self._runner is not None:
            scenarios.extend(self._runner.summaries())
        scenarios.extend(self.bench)
        seen: dict[str, int] = {}
        named = []
        for scenario in scenarios:  # the same scenario measured by two xdist workers: keep both
            seen[scenario.name] = seen.get(scenario.name, 0) + 1
            count = seen[scenario.name]
            named.append(scenario if count == 1 else scenario.replace(name=f"{scenario.name}@{count}"))
        run = {
            "tool": "pytest-iterate",
            "endpoint": opts.endpoint,
            "model": opts.model,
            "profile": opts.profile if opts.is_mock else None,
            "workload": opts.workload or "standard",
            "concurrency": ",".join(map(str, opts.concurrency)),
        }
        order = {cid: i for i, cid in enumerate(CRITERIA_BY_ID)}
        criteria = sorted(self.criteria, key=lambda c: order.get(c.id, len(order)))
        return Report.build({k: v for k, v in run.items() if v is not None}, criteria, named)

    def finish(self) -> int | None:
        """Write the reports and apply the baseline gate; an exit code to force, or None."""
        if not self.criteria and not self.bench and not self.scenario_summaries:
            self.messages.append("no acceptance criterion or iterate_bench run: no report written")
            return None
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

    def _gate(self, report: Report) -> int | None:
        if self.options.baseline is None:
            if self.options.compare_fail:
                self.messages.append("--iterate-compare-fail given without --iterate-baseline: no comparison")
            return None
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
            width = max(len(c.id) for c in self.criteria)
            order = list(CRITERIA_BY_ID)
            for c in sorted(self.criteria, key=lambda c: order.index(c.id) if c.id in order else 99):
                tr.write_line(
                    f"{c.id:<{width}}  {c.verdict:<4}  observed {quantity(c.observed, c.unit):>14}"
                    f"  threshold {c.direction} {quantity(c.threshold, c.unit)}"
                )
        for b in self.bench:
            tr.write_line(
                f"bench {b.name}: {b.requests} requests, mean {quantity(b.latency_s.mean, 's')}, "
                f"p95 {quantity(b.latency_s.p95, 's')}, error rate {b.error_rate:.2%}"
            )
        if self.comparison:
            tr.write_line(self.comparison)
        for message in self.messages:
            tr.write_line(message)
        for path in self.report_paths:
            tr.write_line(f"report: {path}")
