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

import contextlib
import hashlib
import json
import math
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate import __version__
from pytest_iterate._files import write_atomic
from pytest_iterate.client.config import IterateConfig, find_pyproject
from pytest_iterate.client.errors import ConfigError, IterateError
from pytest_iterate.doubles.cassettes import read_cassette
from pytest_iterate.doubles.mock.profiles import load_profile
from pytest_iterate.harness.compare import (
    BaselineMissing,
    IncompleteReport,
    compare,
    load_baseline,
)
from pytest_iterate.harness.fmt import quantity
from pytest_iterate.harness.progress import ScenarioReporter, in_ci
from pytest_iterate.harness.reports import json_report, write_reports
from pytest_iterate.harness.summary import CriterionResult, Report, ReportError, ScenarioSummary
from pytest_iterate.pipeline.workload import load_workload, long_context_workload_path, standard_workload_path
from pytest_iterate.plugin.acceptance.criteria import CRITERIA, CRITERIA_BY_ID
from pytest_iterate.plugin.acceptance.scenarios import (
    NeedsMock,
    NoMeasurement,
    ScenarioRunner,
    available_cores,
)
from pytest_iterate.plugin.options import IterateOptions

__all__ = ["IterateSession"]


CRITERION_TEST = "test_acceptance.py::test_criterion["


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def _writable_dir(path: Path, what: str, option: str) -> None:
    """A usage error naming ``path`` unless a folder can be made or written there."""
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{option}: {path} is a file, not a folder; give a folder for the {what}")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise pytest.UsageError(
            f"{option}: cannot write the {what} under {path} ({existing} is not a writable folder)"
        )


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


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
        self.expected: list[str] = []  # criterion ids this run was asked to measure
        self.crashed: list[str] = []  # scenarios that raised instead of measuring
        self.baseline: Report | None = None
        self.complete = True
        self.incomplete_reason = ""
        self._runner: ScenarioRunner | None = None
        # the [tool.iterate] that applies: the nearest pyproject.toml with one, from where pytest started
        self.pyproject = find_pyproject(Path(config.invocation_params.dir))

    # -- before the run ----------------------------------------------------------------
    def check_inputs(self) -> None:
        """Every setting and file the run will read, validated once before any scenario:
        ``[tool.iterate]`` and ``ITERATE_*``, the workloads, the mock profile, the cassette,
        the report folder, the baseline. A bad one is a usage error (exit 4) naming the file
        (and line or key) now, not a traceback per criterion after the run."""
        opts = self.options
        try:
            IterateConfig.load(
                {"model": opts.model, "api_key_env": opts.api_key_env}, pyproject=self.pyproject
            )
            load_workload(opts.workload or standard_workload_path())
            load_workload(long_context_workload_path())
            if opts.is_mock:
                load_profile(opts.profile)
            if opts.cassette is not None:
                if opts.record_mode == "none" and not opts.cassette.is_file():
                    raise ConfigError(
                        f"--iterate-cassette {opts.cassette}: no such file to replay "
                        "(record one with --iterate-record-mode=once)"
                    )
                if opts.cassette.is_file():
                    read_cassette(opts.cassette)
        except IterateError as exc:
            raise pytest.UsageError(f"pytest --iterate: {exc}") from None
        self._check_paths()

    def _check_paths(self) -> None:
        opts = self.options
        _writable_dir(opts.report_dir, "reports", "--iterate-report-dir")
        if opts.save_baseline is not None:
            target = opts.save_baseline
            _writable_dir(
                target if target.is_dir() or not target.suffix else target.parent,
                "baseline",
                "--iterate-save-baseline",
            )
        if opts.baseline is None:
            return
        try:
            self.baseline = load_baseline(opts.baseline)
        except BaselineMissing as exc:
            self.messages.append(str(exc))  # the first run: nothing to compare with yet
        except (ReportError, IncompleteReport) as exc:
            raise pytest.UsageError(f"--iterate-baseline: {exc}") from None
        except OSError as exc:
            raise pytest.UsageError(f"--iterate-baseline: cannot read {opts.baseline}: {exc}") from None

    def expect(self, nodeids: Iterable[str]) -> None:
        """Record the criteria collected for this run (node ids of the acceptance tests)."""
        for nodeid in nodeids:
            if CRITERION_TEST in nodeid:
                cid = nodeid.rsplit("[", 1)[1].rstrip("]")
                if cid not in self.expected:
                    self.expected.append(cid)

    # -- scenarios and criteria --------------------------------------------------------
    @property
    def runner(self) -> ScenarioRunner:
        if self._runner is None:
            self._runner = ScenarioRunner(
                self.options, pyproject=self.pyproject, progress=self._scenario_reporter()
            )
        return self._runner

    def _scenario_reporter(self) -> ScenarioReporter | None:
        """Scenario progress on pytest's terminal, past its output capture: a live line per
        scenario on a terminal (not in CI), one summary line per scenario everywhere."""
        pm = self.config.pluginmanager
        terminal = pm.get_plugin("terminalreporter")
        if terminal is None:
            return None
        capture = pm.get_plugin("capturemanager")

        def uncaptured() -> contextlib.AbstractContextManager[None]:
            return capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()

        def write(text: str) -> None:
            with uncaptured():
                terminal.write(text)
                terminal.flush()

        def newline() -> None:
            with uncaptured():
                terminal.ensure_newline()

        live = bool(getattr(terminal, "isatty", False)) and not in_ci()
        return ScenarioReporter(write, live=live, newline=newline, prefix="iterate: ")

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
        self.crashed.extend(c for c in payload.get("crashed", []) if c not in self.crashed)

    # -- end of session -----------------------------------------------------------------
    def run_info(self) -> dict[str, str | int | float | bool | None]:
        """Where and how the run ran: what makes two runs comparable (compare warns on a change)."""
        opts = self.options
        workload = Path(opts.workload) if opts.workload else standard_workload_path()
        numprocesses = getattr(self.config.option, "numprocesses", None)
        selected = len(self.expected)
        info: dict[str, str | int | float | bool | None] = {
            "tool": "pytest-iterate",
            "version": __version__,
            "endpoint": opts.endpoint_shown,
            "model": opts.model,
            "profile": opts.profile if opts.is_mock else None,
            "workload": opts.workload or "standard",
            "workload_digest": _digest(workload),
            "concurrency": ",".join(map(str, opts.concurrency)),
            "workers": int(numprocesses) if isinstance(numprocesses, int) and numprocesses > 0 else 1,
            "cpus": available_cores(),
            "python": platform.python_version(),
            "criteria_selected": f"{selected} of {len(CRITERIA)}" if 0 < selected < len(CRITERIA) else None,
        }
        return {k: v for k, v in info.items() if v is not None}

    def build_report(self) -> Report:
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
        order = {cid: i for i, cid in enumerate(CRITERIA_BY_ID)}
        criteria = sorted(self.criteria, key=lambda c: order.get(c.id, len(order)))
        report = Report.build(self.run_info(), criteria, named)
        return report.replace(complete=self.complete, incomplete_reason=self.incomplete_reason)

    def _judge_completeness(self, *, interrupted: bool, stopped: str | None) -> None:
        measured = {c.id for c in self.criteria}
        missing = [cid for cid in self.expected if cid not in measured]
        reasons = []
        if interrupted:
            reasons.append(f"interrupted after {len(measured)} of {len(self.expected)} criteria")
        elif missing:
            why = f"stopped early ({stopped})" if stopped else "stopped early"
            reasons.append(f"{why}: {len(missing)} of {len(self.expected)} selected criteria did not run")
        reasons.extend(self.crashed)
        self.complete = not reasons
        self.incomplete_reason = "; ".join(reasons)

    def finish(self, *, interrupted: bool = False, stopped: str | None = None) -> int | None:
        """Write the reports (marked incomplete when the run did not finish), apply the
        baseline gate, save the baseline; an exit code to force, or None."""
        if not self.criteria and not self.bench and not self.scenario_summaries:
            self.messages.append("no acceptance criterion or iterate_bench run: no report written")
            return None
        self._judge_completeness(interrupted=interrupted, stopped=stopped)
        report = self.build_report()
        try:
            self.report_paths = write_reports(report, self.options.report_dir)
        except OSError as exc:
            self.messages.append(f"reports NOT written to {self.options.report_dir}: {exc}")
            return int(pytest.ExitCode.TESTS_FAILED)
        if not report.complete:
            self.messages.append(f"INCOMPLETE run: {report.incomplete_reason}; no gate, no baseline saved")
            return None
        force = self._gate(report)
        return self._save_baseline(report) or force

    def _save_baseline(self, report: Report) -> int | None:
        target = self.options.save_baseline
        if target is None:
            return None
        if target.is_dir() or not target.suffix:
            target = target / json_report.FILENAME
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, json_report.render(report))
        except OSError as exc:
            self.messages.append(f"baseline NOT saved to {target}: {exc}")
            return int(pytest.ExitCode.TESTS_FAILED)
        self.messages.append(f"baseline saved: {target}")
        return None

    def _gate(self, report: Report) -> int | None:
        opts = self.options
        if opts.baseline is None:
            if opts.compare_fail:
                self.messages.append("--iterate-compare-fail given without --iterate-baseline: no comparison")
            return None
        if self.baseline is None:
            return None  # no baseline yet (the first run): check_paths said so
        rules = list(opts.compare_fail) or ["mean:10%", "p95:10%"]
        result = compare(self.baseline, report, rules, min_delta_s=opts.compare_min_delta)
        self.comparison = result.table()
        if opts.compare_fail and not result.passed:
            self.gate_failed = True
            self.messages.append(f"regression gate FAILED against {opts.baseline}:")
            self.messages.extend(f"  {row.failure_line()}" for row in result.regressions)
            return int(pytest.ExitCode.TESTS_FAILED)
        return None

    def terminal_summary(self, tr: Any) -> None:
        tr.write_sep("=", "pytest-iterate")
        if not self.complete:
            tr.write_line(f"INCOMPLETE run: {self.incomplete_reason}", red=True, bold=True)
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
