"""The ``iterate_budget`` marker: performance budgets on a test's ``iterate_bench`` runs.

::

    @pytest.mark.iterate_budget(mean=2.5, p95=4.0, error_rate=0.01, hit_rate=0.3)
    async def test_designs(iterate_bench):
        await iterate_bench(concurrency=5)

``mean`` and ``p95`` are end-to-end latency in seconds (upper bounds), ``error_rate``
a fraction of requests (upper bound), ``hit_rate`` a fraction answered from the cache
(lower bound). Every ``iterate_bench`` run of the test must meet every budget; a
miss fails the test with observed versus budget. An unknown key or a value that is
not a number is a ``pytest.UsageError`` at collection time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:  # the plugin loads this module on every pytest start: no harness import at run time
    from pytest_iterate.harness.summary import ScenarioSummary

__all__ = ["BUDGET_KEYS", "MARKER", "MARKER_HELP", "Budget", "budget_from_marker", "violations"]

MARKER = "iterate_budget"
MARKER_HELP = (
    "iterate_budget(mean=s, p95=s, error_rate=fraction, hit_rate=fraction): fail the test when its "
    "iterate_bench results exceed the budget"
)


class _Key(NamedTuple):
    read: Callable[[ScenarioSummary], float | None]
    upper: bool  # True: observed must be <= budget
    unit: str


BUDGET_KEYS: Mapping[str, _Key] = {
    "mean": _Key(lambda s: s.latency_s.mean, True, "s"),
    "p95": _Key(lambda s: s.latency_s.p95, True, "s"),
    "error_rate": _Key(lambda s: s.error_rate, True, ""),
    "hit_rate": _Key(lambda s: s.cache.hit_rate, False, ""),
}


class Budget(NamedTuple):
    limits: Mapping[str, float]


def budget_from_marker(mark: pytest.Mark, where: str) -> Budget:
    """Validate the marker's keyword arguments (positional arguments are not accepted)."""
    if mark.args:
        raise pytest.UsageError(
            f"{where}: @pytest.mark.{MARKER} takes keyword arguments only "
            f"({', '.join(BUDGET_KEYS)}), got positional {mark.args!r}"
        )
    unknown = sorted(set(mark.kwargs) - set(BUDGET_KEYS))
    if unknown:
        raise pytest.UsageError(
            f"{where}: unknown {MARKER} key(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(BUDGET_KEYS)}"
        )
    limits: dict[str, float] = {}
    for key, value in mark.kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise pytest.UsageError(f"{where}: {MARKER}({key}={value!r}) is not a number")
        limits[key] = float(value)
    return Budget(limits)


def _show(value: float, unit: str) -> str:
    return f"{value:.4g} {unit}".strip() if unit else f"{value:.2%}"


def violations(budget: Budget, summaries: Sequence[ScenarioSummary]) -> list[str]:
    """One line per budget missed by one of ``summaries`` (empty: within budget)."""
    lines: list[str] = []
    for summary in summaries:
        name = summary.name
        if summary.all_failed():  # latency of errors would pass a latency budget
            kinds = summary.error_kinds_text()
            lines.append(
                f"{name}: nothing measured: all {summary.requests} requests failed"
                + (f" ({kinds})" if kinds else "")
            )
            continue
        for key, limit in budget.limits.items():
            spec = BUDGET_KEYS[key]
            observed = spec.read(summary)
            if observed is None or observed != observed:
                lines.append(f"{name}: {key} not measured (budget {_show(limit, spec.unit)})")
            elif (observed > limit) if spec.upper else (observed < limit):
                sign = "<=" if spec.upper else ">="
                lines.append(
                    f"{name}: {key} observed {_show(observed, spec.unit)} vs budget "
                    f"{sign} {_show(limit, spec.unit)}"
                )
    return lines
