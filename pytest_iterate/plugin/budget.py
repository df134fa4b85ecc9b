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

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pytest

__all__ = ["BUDGET_KEYS", "MARKER", "MARKER_HELP", "Budget", "budget_from_marker", "violations"]

MARKER = "iterate_budget"
MARKER_HELP = (
    "iterate_budget(mean=s, p95=s, error_rate=fraction, hit_rate=fraction): fail the test when its "
    "iterate_bench results exceed the budget"
)


class _Key(NamedTuple):
    path: tuple[str, ...]
    upper: bool  # True: observed must be <= budget
    unit: str


BUDGET_KEYS: Mapping[str, _Key] = {
    "mean": _Key(("latency_s", "mean"), True, "s"),
    "p95": _Key(("latency_s", "p95"), True, "s"),
    "error_rate": _Key(("error_rate",), True, ""),
    "hit_rate": _Key(("cache", "hit_rate"), False, ""),
}


class Budget(NamedTuple):
    limits: Mapping[str, float]


def budget_from_marker(mark: pytest.Mark, where: str) -> Budget:
    """Validate the marker's keyword arguments (positional arguments are not accepted)."""
    if mark.args:
        raise pytest.UsageError(f"{where}: @pytest.mark.{MARKER} takes keyword arguments only "
                                f"({', '.join(BUDGET_KEYS)}), got positional {mark.args!r}")
    unknown = sorted(set(mark.kwargs) - set(BUDGET_KEYS))
    if unknown:
        raise pytest.UsageError(f"{where}: unknown {MARKER} key(s) {', '.join(map(repr, unknown))}; "
                                f"accepted: {', '.join(BUDGET_KEYS)}")
    limits: dict[str, float] = {}
    for key, value in mark.kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise pytest.UsageError(f"{where}: {MARKER}({key}={value!r}) is not a number")
        limits[key] = float(value)
    return Budget(limits)


def _get(summary: Mapping[str, Any], path: Sequence[str]) -> float | None:
    node: Any = summary
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, (int, float)) else None


def _show(value: float, unit: str) -> str:
    return f"{value:.4g} {unit}".strip() if unit else f"{value:.2%}"


def violations(budget: Budget, summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per budget missed by one of ``summaries`` (empty: within budget)."""
    from pytest_iterate.harness.stats import (  # not at import: the plugin loads this module
        all_failed,
        error_kinds_text,
    )

    lines: list[str] = []
    for summary in summaries:
        if all_failed(summary):  # latency of errors would pass a latency budget
            kinds = error_kinds_text(summary)
            lines.append(f"{summary.get('name', 'bench')}: nothing measured: all {summary['requests']} "
                         "requests failed" + (f" ({kinds})" if kinds else ""))
            continue
        for key, limit in budget.limits.items():
            spec = BUDGET_KEYS[key]
            observed = _get(summary, spec.path)
            name = summary.get("name", "bench")
            if observed is None or observed != observed:
                lines.append(f"{name}: {key} not measured (budget {_show(limit, spec.unit)})")
            elif (observed > limit) if spec.upper else (observed < limit):
                sign = "<=" if spec.upper else ">="
                lines.append(f"{name}: {key} observed {_show(observed, spec.unit)} vs budget "
                             f"{sign} {_show(limit, spec.unit)}")
    return lines
