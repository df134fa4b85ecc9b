"""Compare a run against a baseline report and flag regressions, noise-aware.

Rules are ``METRIC:THRESHOLD``:

* ``p95:10%`` / ``mean:5%`` / ``p99:20%`` ... — latency statistic (``latency_s``) may
  grow by at most that fraction; ``ttft_s.p95:10%`` names another distribution.
* ``error_rate:+0.5`` — error rate may grow by at most 0.5 percentage points.
* ``p95:+0.05`` — absolute growth in seconds. ``throughput:10%`` — requests/s may
  *drop* by at most 10 %.

A rule is a **regression** only when the threshold is exceeded *and*, where both
reports hold raw samples (``samples_s``), the difference is statistically
significant at ``alpha`` (default 0.01, so a noisy runner rarely fails a build):
a one-sided bootstrap of the percentile (seeded, 1,000 resamples of at most 1,000
samples) for percentiles, Mann-Whitney U (normal approximation) for the mean, and
a two-proportion z-test for the error rate.
Without samples the threshold alone decides, and the table says "no samples".
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_iterate.harness.reports import json_report
from pytest_iterate.harness.stats import mann_whitney_u
from pytest_iterate.harness.summary import STATS, Report, ScenarioSummary, percentile

__all__ = [
    "BaselineMissing",
    "Comparison",
    "ComparisonRow",
    "Rule",
    "compare",
    "load_baseline",
    "parse_rule",
]

_PCT = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9}
_LAT_STATS = tuple(s for s in STATS if s not in ("stddev", "q1", "q3"))
_BOOTSTRAP_CAP = 1000  # samples per side fed to the bootstrap (keeps a compare under a second)


class BaselineMissing(FileNotFoundError):
    """No baseline report at the given path (first run): a message, not a crash."""


def load_baseline(path: Path | str) -> Report:
    """Read a baseline report (file, or a folder holding ``iterate-report.json``)."""
    p = Path(path)
    target = p / json_report.FILENAME if p.is_dir() else p
    if not target.exists():
        raise BaselineMissing(
            f"no baseline report at {target}: nothing to compare against yet. Save one first "
            f"(iterate-bench run --report-dir DIR, or pytest --iterate-save-baseline {target})."
        )
    return json_report.load(target)


@dataclass(frozen=True, slots=True)
class Rule:
    """One gate: ``metric`` (``latency_s.p95``, ``error_rate``, ``throughput_rps``), relative or
    absolute ``limit``."""

    text: str
    path: tuple[str, ...]
    limit: float
    relative: bool
    higher_is_worse: bool = True

    @property
    def stat(self) -> str:
        return self.path[-1]

    def value(self, scenario: ScenarioSummary) -> float | None:
        """The rule's metric in ``scenario`` (None when the scenario does not have it)."""
        if self.path == ("error_rate",):
            return scenario.error_rate
        if self.path == ("throughput_rps",):
            return scenario.throughput_rps
        return scenario.distribution(".".join(self.path[:-1])).stat(self.stat)


def parse_rule(text: str) -> Rule:
    """``"p95:10%"`` -> Rule; ``ValueError`` names a bad rule and the accepted forms."""
    metric, sep, thr = text.strip().partition(":")
    metric = metric.strip().replace("p99.9", "p99_9")
    accepted = (
        "expected METRIC:N% (relative) or METRIC:+N (absolute), METRIC one of "
        f"{', '.join(_LAT_STATS)}, error_rate, throughput, or DIST.STAT like ttft_s.p95"
    )
    if not sep or not thr.strip():
        raise ValueError(f"bad rule {text!r}; {accepted}")
    thr = thr.strip()
    relative = thr.endswith("%")
    try:
        limit = float(thr[:-1] if relative else thr)
    except ValueError:
        raise ValueError(f"bad rule {text!r}: threshold {thr!r} is not a number; {accepted}") from None
    if limit < 0:
        raise ValueError(f"bad rule {text!r}: threshold must be >= 0")
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
    elif "." in metric and metric.split(".")[-1] in _LAT_STATS and _known_distribution(metric):
        path = tuple(metric.split("."))
    else:
        raise ValueError(f"bad rule {text!r}: unknown metric {metric!r}; {accepted}")
    return Rule(text=text.strip(), path=path, limit=limit, relative=relative, higher_is_worse=higher_is_worse)


def _known_distribution(metric: str) -> bool:
    name = metric.rsplit(".", 1)[0]
    try:
        ScenarioSummary(name="probe", requests=0).distribution(name)
    except KeyError:
        return False
    return True


@dataclass(slots=True)
class ComparisonRow:
    scenario: str
    rule: str
    baseline: float | None
    current: float | None
    delta: float | None
    delta_rel: float | None
    exceeded: bool
    significant: bool | None  # None: no raw samples to test
    p_value: float | None
    regression: bool
    note: str = ""


@dataclass(slots=True)
class Comparison:
    rows: list[ComparisonRow] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # scenarios only in one report
    alpha: float = 0.01

    @property
    def regressions(self) -> list[ComparisonRow]:
        return [r for r in self.rows if r.regression]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def table(self) -> str:
        """A plain-text table of deltas with a verdict per row."""
        head = ("scenario", "rule", "baseline", "current", "delta", "verdict")
        lines = []
        for r in self.rows:
            rel = "" if r.delta_rel is None else f" ({r.delta_rel * 100:+.1f}%)"
            delta = "-" if r.delta is None else f"{r.delta:+.4g}{rel}"
            if r.regression:
                verdict = "REGRESSION" + (
                    f" (significant, p={r.p_value:.3g})" if r.p_value is not None else " (no samples to test)"
                )
            elif r.exceeded and r.significant is False:
                verdict = f"over threshold but within noise (p={r.p_value:.3g})"
            elif r.exceeded:
                verdict = "over threshold"
            else:
                verdict = "ok" + (f" (p={r.p_value:.3g})" if r.p_value is not None else "")
            if r.note:
                verdict += f" [{r.note}]"
            lines.append((r.scenario, r.rule, _f(r.baseline), _f(r.current), delta, verdict))
        widths = (
            [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
            if lines
            else [len(h) for h in head]
        )
        out = ["  ".join(str(x).ljust(w) for x, w in zip(head, widths, strict=True))]
        out += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in lines]
        for name in self.missing:
            out.append(f"(scenario {name!r} is in only one report: not compared)")
        out.append("RESULT: " + ("pass" if self.passed else f"{len(self.regressions)} regression(s)"))
        return "\n".join(out)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _bootstrap_p(a: Sequence[float], b: Sequence[float], q: float, resamples: int, seed: int) -> float:
    """One-sided p-value that percentile ``q`` of ``b`` is not above that of ``a``:
    the share of bootstrap resamples where it is not."""
    rng = random.Random(seed)
    na, nb = len(a), len(b)
    not_higher = 0
    for _ in range(resamples):
        ra = sorted(a[rng.randrange(na)] for _ in range(na))
        rb = sorted(b[rng.randrange(nb)] for _ in range(nb))
        if percentile(rb, q, presorted=True) <= percentile(ra, q, presorted=True):
            not_higher += 1
    return (not_higher + 1) / (resamples + 1)


def _stride(values: Sequence[float], cap: int) -> list[float]:
    if len(values) <= cap:
        return [float(v) for v in values]
    step = len(values) / cap
    return [float(values[int(i * step)]) for i in range(cap)]


def _two_proportion_p(e1: int, n1: int, e2: int, n2: int) -> float:
    """One-sided p-value that the second error proportion is higher."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (e1 + e2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 1.0 if e2 / n2 <= e1 / n1 else 0.0
    z = (e2 / n2 - e1 / n1) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _significance(
    rule: Rule, base: ScenarioSummary, cur: ScenarioSummary, resamples: int, seed: int
) -> tuple[float | None, str]:
    if rule.path == ("error_rate",):
        if base.requests and cur.requests:
            return _two_proportion_p(base.errors, base.requests, cur.errors, cur.requests), ""
        return None, "no counts"
    if rule.path[0] != "latency_s":
        return None, "no samples"
    a, b = base.samples_s, cur.samples_s
    if len(a) < 5 or len(b) < 5:
        return None, "no samples"
    stat = rule.stat
    if stat in ("mean",):
        _, p2 = mann_whitney_u(a, b)
        # One-sided: halve the two-sided p when the shift goes the bad way.
        higher = sum(b) / len(b) > sum(a) / len(a)
        return (p2 / 2 if higher else 1 - p2 / 2), ""
    if stat in _PCT:
        a_cap, b_cap = _stride(a, _BOOTSTRAP_CAP), _stride(b, _BOOTSTRAP_CAP)
        return _bootstrap_p(a_cap, b_cap, _PCT[stat], resamples, seed), ""
    return None, f"no test for {stat}"


def compare(
    baseline: Report,
    current: Report,
    rules: Sequence[str | Rule],
    *,
    alpha: float = 0.01,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Apply ``rules`` to every scenario present in both reports (matched by name)."""
    parsed = [r if isinstance(r, Rule) else parse_rule(r) for r in rules]
    base_by = {s.name: s for s in baseline.scenarios}
    cur_by = {s.name: s for s in current.scenarios}
    result = Comparison(alpha=alpha)
    result.missing = sorted(set(base_by) ^ set(cur_by))
    for name in [n for n in cur_by if n in base_by]:
        b, c = base_by[name], cur_by[name]
        for rule in parsed:
            bv, cv = rule.value(b), rule.value(c)
            if bv is None or cv is None:
                result.rows.append(
                    ComparisonRow(
                        name, rule.text, bv, cv, None, None, False, None, None, False, "metric missing"
                    )
                )
                continue
            delta = cv - bv
            worse = delta if rule.higher_is_worse else -delta
            rel = delta / bv if bv else None
            if rule.relative:
                exceeded = worse > rule.limit * abs(bv) if bv else worse > 0
            else:
                exceeded = worse > rule.limit
            p, note = (None, "")
            if exceeded:
                p, note = _significance(rule, b, c, resamples, seed)
            significant = None if p is None else p < alpha
            regression = exceeded and significant is not False
            result.rows.append(
                ComparisonRow(name, rule.text, bv, cv, delta, rel, exceeded, significant, p, regression, note)
            )
    return result
