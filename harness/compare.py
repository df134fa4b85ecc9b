"""Compare a run against a baseline report: regressions beyond noise, with known error rates.

Rules are ``[SCENARIO.]METRIC:LIMIT``:

* ``p95:10%``, ``mean:5%``, ``p99:+0.05`` — a latency statistic (``latency_s``) may grow by
  at most that fraction, or that many seconds; ``ttft_s.p95:10%`` names another distribution.
* ``error_rate:+0.5`` — the error rate may grow by at most 0.5 percentage points.
* ``throughput:10%`` — requests per second may *drop* by at most 10 %.
* ``standard.p95:10%`` — the rule for one scenario only (scenario names may hold ``:``,
  e.g. ``closed:5.p95:10%``).

How a rule decides (the definitions and the measured error rates are in DEFINITIONS.md):

* **Noise floor.** A latency change smaller than ``min_delta_s`` (default 5 ms) is never a
  regression, whatever its relative size.
* **mean** — the mean grew beyond the limit *and* the current run is slower as a whole
  over the raw latencies (``samples_s``): a Mann-Whitney rank test and Welch's t-test on
  the log-latencies must both say so (one-sided, ``alpha``).
* **percentiles** (p50 ... p99.9, max) — either the percentile itself grew beyond the limit
  and a permutation test of that percentile says so (a tail that grew), or the whole
  distribution moved: its Hodges-Lehmann ratio grew beyond the limit and the two shift
  tests say so (a uniform slowdown, caught with far fewer samples than the percentile alone
  needs). The shift path runs at ``alpha``, the tail path at 0.2 ``alpha``;
  DEFINITIONS.md gives the false-alarm rates and the power measured for both together.
* **error_rate** — beyond the limit and a two-proportion z-test at ``alpha``.
* Fewer than :data:`MIN_SAMPLES` latencies on a side: nothing can be shown, never a
  regression ("too few samples"). Metrics without raw samples (``ttft_s``, stages,
  throughput): the limit alone decides, and the table says so.

Scenarios whose summary says ``gated: false`` (answered from the cache, the saturation
probe) are listed as "not gated" with the reason, unless a rule names them. A report that
is incomplete on either side is refused (:class:`IncompleteReport`). Differences in what
makes two runs comparable (endpoint, model, profile, workload, concurrency, workers,
package version) are returned as warnings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_iterate.harness.fmt import percent, quantity, seconds
from pytest_iterate.harness.reports import json_report
from pytest_iterate.harness.significance import (
    paired_log_ratios,
    paired_p,
    proportion_p,
    quantile_p,
    ratio_estimate,
    shift_p,
)
from pytest_iterate.harness.summary import DISTRIBUTIONS, Report, ScenarioSummary, percentile

__all__ = [
    "COMPARABLE_KEYS",
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_DELTA_S",
    "MIN_SAMPLES",
    "BaselineMissing",
    "Comparison",
    "ComparisonRow",
    "IncompleteReport",
    "Rule",
    "comparability_warnings",
    "compare",
    "load_baseline",
    "parse_rule",
]

DEFAULT_ALPHA = 0.005
DEFAULT_MIN_DELTA_S = 0.005
MIN_SAMPLES = 8
_TAIL_SHARE = 0.2  # of alpha, for a percentile rule's own permutation test (its "tail grew" path)
COMPARABLE_KEYS = (
    "endpoint",
    "model",
    "profile",
    "workload",
    "workload_digest",
    "concurrency",
    "workers",
    "version",
)
_PCT = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9, "max": 100.0, "min": 0.0}
_LAT_STATS = ("mean", *_PCT)
_METRIC = re.compile(
    r"(?:^|\.)(?P<metric>(?:(?:stages\.[A-Za-z0-9_]+|[a-z]+_s)\.)?(?:mean|p50|p90|p95|p99|p99_9|max|min)"
    r"|error_rate|throughput(?:_rps)?)$"
)


class BaselineMissing(FileNotFoundError):
    """No baseline report at the given path (the first run): a message, not a failure."""


class IncompleteReport(ValueError):
    """A report of a run that did not finish: it is not compared, nor saved as a baseline."""


def load_baseline(path: Path | str) -> Report:
    """Read a baseline report (a file, or a folder holding ``iterate-report.json``).

    Raises :class:`BaselineMissing` when there is none, ``ReportError`` when the file is not
    a report, :class:`IncompleteReport` when the run that wrote it did not finish.
    """
    p = Path(path)
    target = p / json_report.FILENAME if p.is_dir() else p
    if not target.exists():
        raise BaselineMissing(
            f"no baseline report at {target}: nothing to compare against yet. Save one first "
            f"(iterate-bench run --report-dir DIR, or pytest --iterate-save-baseline={target})."
        )
    report = json_report.load(target)
    if not report.complete:
        raise IncompleteReport(
            f"the baseline {target} is from a run that did not finish "
            f"({report.incomplete_reason or 'no reason recorded'}); save a complete one"
        )
    return report


@dataclass(frozen=True, slots=True)
class Rule:
    """One gate: ``path`` names the metric (``("latency_s", "p95")``, ``("error_rate",)``,
    ``("throughput_rps",)``), ``limit`` is a fraction (relative) or an amount (absolute:
    seconds, or a fraction of requests for the error rate); ``scenario`` limits it to one."""

    text: str
    path: tuple[str, ...]
    limit: float
    relative: bool
    higher_is_worse: bool = True
    scenario: str | None = None

    @property
    def stat(self) -> str:
        return self.path[-1]

    @property
    def is_latency(self) -> bool:
        return self.path[0] not in ("error_rate", "throughput_rps")

    def applies_to(self, scenario: ScenarioSummary) -> bool:
        if self.scenario is not None:
            return self.scenario == scenario.name
        return scenario.gated

    def value(self, scenario: ScenarioSummary) -> float | None:
        """The rule's metric in ``scenario`` (None when the scenario does not have it)."""
        if self.path == ("error_rate",):
            return scenario.error_rate if scenario.requests else None
        if self.path == ("throughput_rps",):
            return scenario.throughput_rps
        return scenario.distribution(".".join(self.path[:-1])).stat(self.stat)

    def show(self, value: float | None) -> str:
        if self.path == ("error_rate",):
            return percent(value)
        if self.path == ("throughput_rps",):
            return quantity(value, "req/s")
        return seconds(value)


def parse_rule(text: str) -> Rule:
    """``"p95:10%"`` -> Rule; ``ValueError`` names a bad rule and the accepted forms."""
    accepted = (
        "expected [SCENARIO.]METRIC:N% (relative) or [SCENARIO.]METRIC:+N (absolute), METRIC one of "
        f"{', '.join(_LAT_STATS)}, error_rate, throughput, or DIST.STAT like ttft_s.p95"
    )
    left, sep, thr = text.strip().rpartition(":")
    left = left.strip().replace("p99.9", "p99_9")
    thr = thr.strip()
    if not sep or not left or not thr:
        raise ValueError(f"bad rule {text!r}; {accepted}")
    relative = thr.endswith("%")
    try:
        limit = float(thr[:-1] if relative else thr)
    except ValueError:
        raise ValueError(f"bad rule {text!r}: threshold {thr!r} is not a number; {accepted}") from None
    if not limit >= 0 or limit == float("inf"):
        raise ValueError(f"bad rule {text!r}: threshold must be a finite number >= 0; {accepted}")
    match = _METRIC.search(left)
    if match is None:
        raise ValueError(f"bad rule {text!r}: unknown metric in {left!r}; {accepted}")
    metric = match.group("metric")
    scenario = left[: match.start("metric")].removesuffix(".") or None
    if relative:
        limit /= 100.0
    higher_is_worse = True
    if metric in _LAT_STATS:
        path: tuple[str, ...] = ("latency_s", metric)
    elif metric == "error_rate":
        path = ("error_rate",)
        if not relative:
            limit /= 100.0  # percentage points -> fraction
    elif metric in ("throughput", "throughput_rps"):
        path, higher_is_worse = ("throughput_rps",), False
    else:
        dist = metric.rsplit(".", 1)[0]
        if not (dist in DISTRIBUTIONS or dist.startswith("stages.")):
            raise ValueError(f"bad rule {text!r}: unknown distribution {dist!r}; {accepted}")
        path = (dist, metric.rsplit(".", 1)[1])
    return Rule(text.strip(), path, limit, relative, higher_is_worse, scenario)


@dataclass(slots=True)
class ComparisonRow:
    """One rule applied to one scenario. ``method`` names the test that decided."""

    scenario: str
    rule: Rule
    baseline: float | None = None
    current: float | None = None
    exceeded: bool = False
    p_value: float | None = None
    regression: bool = False
    method: str = ""
    note: str = ""
    gated: bool = True

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.current is None else self.current - self.baseline

    @property
    def delta_rel(self) -> float | None:
        delta = self.delta
        return None if delta is None or not self.baseline else delta / abs(self.baseline)

    @property
    def verdict(self) -> str:
        if not self.gated:
            return f"not gated: {self.note}"
        if self.regression:
            return "REGRESSION" + (
                f" (p={self.p_value:.2g}, {self.method})" if self.p_value is not None else f" ({self.method})"
            )
        if self.exceeded and self.p_value is not None:
            return f"over the limit but within noise (p={self.p_value:.2g})"
        return "ok" + (f" [{self.note}]" if self.note else "")

    def delta_text(self) -> str:
        delta, rel = self.delta, self.delta_rel
        if delta is None:
            return "-"
        shown = self.rule.show(abs(delta))
        text = ("+" if delta >= 0 else "-") + shown
        return text + (f" ({rel * 100:+.1f}%)" if rel is not None else "")

    def failure_line(self) -> str:
        """``standard p95:10%: baseline 2.31 s, current 3.47 s, delta +1.16 s (+50.2%), p=0.0004``."""
        p = f", p={self.p_value:.2g} ({self.method})" if self.p_value is not None else f" ({self.method})"
        return (
            f"{self.scenario} {self.rule.text}: baseline {self.rule.show(self.baseline)}, current "
            f"{self.rule.show(self.current)}, delta {self.delta_text()}{p}"
        )


@dataclass(slots=True)
class Comparison:
    rows: list[ComparisonRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # scenarios only in one report
    warnings: list[str] = field(default_factory=list)  # the runs differ in what makes them comparable
    alpha: float = DEFAULT_ALPHA

    @property
    def regressions(self) -> list[ComparisonRow]:
        return [r for r in self.rows if r.regression]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def table(self) -> str:
        """A plain-text table of the rows with units and a verdict per row."""
        head = ("scenario", "rule", "baseline", "current", "delta", "verdict")
        lines = [
            (
                r.scenario,
                r.rule.text,
                r.rule.show(r.baseline),
                r.rule.show(r.current),
                r.delta_text(),
                r.verdict,
            )
            for r in self.rows
        ]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
        out = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths, strict=True)).rstrip()]
        out += [
            "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in lines
        ]
        out += [f"(scenario {name!r} is in only one report: not compared)" for name in self.missing]
        out += [f"WARNING: {w}" for w in self.warnings]
        out += [f"REGRESSION {r.failure_line()}" for r in self.regressions]
        out.append("RESULT: " + ("pass" if self.passed else f"{len(self.regressions)} regression(s)"))
        return "\n".join(out)


def comparability_warnings(baseline: Report, current: Report) -> list[str]:
    """What differs between the two runs' setups (each difference can explain a change)."""
    out = []
    for key in COMPARABLE_KEYS:
        before, after = baseline.run.get(key), current.run.get(key)
        if before is not None and after is not None and before != after:
            out.append(f"the runs differ in {key}: baseline {before!r}, current {after!r}")
    for cur in current.scenarios:
        base = baseline.scenario(cur.name)
        if base is not None and base.load and cur.load and base.load != cur.load:
            out.append(f"scenario {cur.name!r} ran with load {base.load} in the baseline, {cur.load} now")
    return out


def _shift(base: ScenarioSummary, cur: ScenarioSummary) -> tuple[float, float | None, str]:
    """(p-value, ratio estimate, method) of "the current run is slower as a whole": paired
    request by request when both runs keyed the same requests, else over the two samples."""
    if base.sample_keys and cur.sample_keys:
        diffs = paired_log_ratios(base.samples_s, base.sample_keys, cur.samples_s, cur.sample_keys)
        if len(diffs) >= MIN_SAMPLES:
            ratio = math.exp(percentile(sorted(diffs), 50.0))
            return paired_p(diffs), ratio, f"paired over {len(diffs)} requests"
    a, b = base.samples_s, cur.samples_s
    return shift_p(a, b), ratio_estimate(a, b), "rank and log-t tests"


def _decide(
    rule: Rule,
    base: ScenarioSummary,
    cur: ScenarioSummary,
    row: ComparisonRow,
    alpha: float,
    min_delta_s: float,
    seed: int,
) -> None:
    delta = (row.current or 0.0) - (row.baseline or 0.0)
    worse = delta if rule.higher_is_worse else -delta
    bv = row.baseline or 0.0
    limit = rule.limit * abs(bv) if rule.relative else rule.limit
    row.exceeded = worse > limit if (bv or not rule.relative) else worse > 0
    if rule.is_latency and worse < min_delta_s:
        row.exceeded, row.note = False, f"below the {seconds(min_delta_s)} noise floor" if worse > 0 else ""
        return
    if rule.path == ("error_rate",):
        row.p_value = proportion_p(base.errors, base.requests, cur.errors, cur.requests)
        row.method = "two-proportion z-test"
        row.regression = row.exceeded and row.p_value < alpha
        return
    if rule.path[0] != "latency_s":
        row.method, row.note = "limit only", "no raw samples for this metric"
        row.regression = row.exceeded
        return
    a, b = base.samples_s, cur.samples_s
    if not a or not b:
        row.method, row.note = "limit only", "no raw samples"
        row.regression = row.exceeded
        return
    if min(len(a), len(b)) < MIN_SAMPLES:
        row.note = f"too few samples to test ({len(a)} vs {len(b)}; {MIN_SAMPLES} needed)"
        row.exceeded = False
        return
    p_shift, ratio, how = _shift(base, cur)
    if rule.stat == "mean":
        row.p_value, row.method = p_shift, how
        row.regression = row.exceeded and row.p_value < alpha
        return
    # a percentile: the whole distribution moved, or its own permutation test (a tail that grew)
    shift = (ratio - 1.0) * bv if ratio is not None else 0.0
    shifted = shift >= min_delta_s and (shift > rule.limit * abs(bv) if rule.relative else shift > rule.limit)
    if shifted and p_shift < alpha:
        row.exceeded, row.p_value, row.regression = True, p_shift, True
        row.method = f"whole distribution {ratio:.2f}x slower, {how}"
        return
    if row.exceeded:
        row.p_value = quantile_p(a, b, _PCT[rule.stat], seed=seed)
        row.method = f"permutation test of {rule.stat}"
        row.regression = row.p_value < _TAIL_SHARE * alpha
    else:
        row.p_value, row.method = p_shift, how


def compare(
    baseline: Report,
    current: Report,
    rules: Sequence[str | Rule],
    *,
    alpha: float = DEFAULT_ALPHA,
    min_delta_s: float = DEFAULT_MIN_DELTA_S,
    seed: int = 0,
) -> Comparison:
    """Apply ``rules`` to every scenario present in both reports (matched by name).

    Raises :class:`IncompleteReport` when either report is from a run that did not finish.
    """
    for label, report in (("baseline", baseline), ("current", current)):
        if not report.complete:
            raise IncompleteReport(
                f"the {label} report is from a run that did not finish "
                f"({report.incomplete_reason or 'no reason recorded'}): not compared"
            )
    parsed = [r if isinstance(r, Rule) else parse_rule(r) for r in rules]
    base_by = {s.name: s for s in baseline.scenarios}
    cur_by = {s.name: s for s in current.scenarios}
    result = Comparison(alpha=alpha, warnings=comparability_warnings(baseline, current))
    result.missing = sorted(set(base_by) ^ set(cur_by))
    for name in [n for n in cur_by if n in base_by]:
        b, c = base_by[name], cur_by[name]
        for rule in parsed:
            if rule.scenario is not None and rule.scenario != name:
                continue
            row = ComparisonRow(name, rule, rule.value(b), rule.value(c))
            if not rule.applies_to(c):
                row.gated, row.note = False, c.gate_note or "the scenario is not gated"
            elif row.baseline is None or row.current is None:
                row.note = "metric missing"
            else:
                _decide(rule, b, c, row, alpha, min_delta_s, seed)
            result.rows.append(row)
    return result
