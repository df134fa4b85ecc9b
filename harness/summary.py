"""The typed results the harness hands on: one scenario, one criterion, one report.

:class:`ScenarioSummary` is what :func:`~pytest_iterate.harness.stats.summarize` makes
from raw samples and what the budget marker, the baseline comparison, the report
writers and the plugin session read. :class:`Report` holds a run's criteria and
scenarios. JSON is their serialisation only: ``to_json()`` writes the report format of
docs/DESIGN.md (schema ``pytest-iterate/report/v1``) and ``from_json()`` reads it back,
raising :class:`ReportError` (naming the field) for anything that is not such a report.

>>> d = Distribution.of([0.1, 0.2, 0.3])
>>> d.count, round(d.mean or 0, 3), d.stat("p50")
(3, 0.2, 0.2)
>>> Distribution.from_json(d.to_json()) == d
True
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DISTRIBUTIONS",
    "REPORT_SCHEMA",
    "STATS",
    "CacheCounts",
    "CriterionResult",
    "Distribution",
    "Goodput",
    "Report",
    "ReportError",
    "ScenarioSummary",
    "TokenCounts",
    "WorkerShare",
    "percentile",
]

REPORT_SCHEMA = "pytest-iterate/report/v1"
STATS = ("mean", "min", "p50", "p90", "p95", "p99", "p99_9", "max", "stddev", "q1", "q3")
DISTRIBUTIONS = ("latency_s", "service_s", "scheduling_lag_s", "ttft_s", "itl_s", "tpot_s")
_QUANTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p99_9", 99.9))

Scalar = str | int | float | bool | None


class ReportError(ValueError):
    """A document that is not a pytest-iterate report (or a part of one); names what is wrong."""


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default); NaN for none."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q!r} is outside 0..100")
    if not values:
        return math.nan
    xs = values if presorted else sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# -- reading JSON back, with errors that name the field ---------------------------------------
def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _obj(data: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ReportError(f"{path or 'the report'} should be a JSON object, got {type(data).__name__}")
    return data


def _num(data: Mapping[str, Any], key: str, path: str, *, default: float | None = None) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{_where(path, key)} should be a number or null, got {value!r}")
    return float(value)


def _int(data: Mapping[str, Any], key: str, path: str, *, default: int = 0) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ReportError(f"{_where(path, key)} should be a whole number >= 0, got {value!r}")
    return int(value)


def _str(data: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ReportError(f"{_where(path, key)} should be a string, got {value!r}")
    return value


def _counts(data: Any, path: str) -> dict[str, int]:
    obj = _obj(data if data is not None else {}, path)
    return {str(k): _int(obj, k, path) for k in obj}


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _scalars(data: Any, path: str) -> dict[str, Scalar]:
    obj = _obj(data if data is not None else {}, path)
    out: dict[str, Scalar] = {}
    for key, value in obj.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            out[str(key)] = str(value)
        else:
            out[str(key)] = value
    return out


# -- the parts ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Distribution:
    """count, mean, min, p50 .. p99_9, max, stddev, q1, q3 of a set of values (None: no values)."""

    count: int = 0
    mean: float | None = None
    min: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    p99_9: float | None = None
    max: float | None = None
    stddev: float | None = None
    q1: float | None = None
    q3: float | None = None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        xs = sorted(float(v) for v in values)
        n = len(xs)
        if n == 0:
            return cls()
        mean = math.fsum(xs) / n
        var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
        quantiles = {key: percentile(xs, q, presorted=True) for key, q in _QUANTILES}
        return cls(
            count=n,
            mean=mean,
            min=xs[0],
            max=xs[-1],
            stddev=math.sqrt(var),
            q1=percentile(xs, 25.0, presorted=True),
            q3=percentile(xs, 75.0, presorted=True),
            **quantiles,
        )

    def stat(self, name: str) -> float | None:
        """One statistic by name (``"p95"``, ``"mean"``, ...)."""
        if name not in STATS:
            raise KeyError(f"unknown statistic {name!r}; known: {', '.join(STATS)}")
        value: float | None = getattr(self, name)
        return value

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, **{name: _finite(getattr(self, name)) for name in STATS}}

    @classmethod
    def from_json(cls, data: Any, path: str = "") -> Distribution:
        obj = _obj(data if data is not None else {}, path)
        return cls(count=_int(obj, "count", path), **{name: _num(obj, name, path) for name in STATS})


@dataclass(frozen=True, slots=True)
class CacheCounts:
    """Requests answered from a cache (``hits``, per tier in ``by_tier``) and the rest."""

    hits: int = 0
    misses: int = 0
    by_tier: Mapping[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "by_tier": dict(self.by_tier),
        }

    @classmethod
    def from_json(cls, data: Any, path: str = "cache") -> CacheCounts:
        obj = _obj(data if data is not None else {}, path)
        return cls(
            _int(obj, "hits", path),
            _int(obj, "misses", path),
            _counts(obj.get("by_tier"), _where(path, "by_tier")),
        )


@dataclass(frozen=True, slots=True)
class TokenCounts:
    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "total": self.total}

    @classmethod
    def from_json(cls, data: Any, path: str = "tokens") -> TokenCounts:
        obj = _obj(data if data is not None else {}, path)
        return cls(_int(obj, "prompt", path), _int(obj, "completion", path))


@dataclass(frozen=True, slots=True)
class Goodput:
    """Requests that succeeded and met every per-request objective (upper bounds, seconds)."""

    objectives: Mapping[str, float]
    good_requests: int
    goodput_rps: float | None
    fraction: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "objectives": dict(self.objectives),
            "good_requests": self.good_requests,
            "goodput_rps": _finite(self.goodput_rps),
            "fraction": _finite(self.fraction),
        }

    @classmethod
    def from_json(cls, data: Any, path: str = "goodput") -> Goodput:
        obj = _obj(data, path)
        objectives = _obj(obj.get("objectives") or {}, _where(path, "objectives"))
        return cls(
            {str(k): float(_num(objectives, k, path) or 0.0) for k in objectives},
            _int(obj, "good_requests", path),
            _num(obj, "goodput_rps", path),
            _num(obj, "fraction", path),
        )


@dataclass(frozen=True, slots=True)
class WorkerShare:
    """What one worker process sent in a scenario run on several (``iterate-bench run
    --workers N``, a Locust worker): its requests, errors, scheduling lag and the most
    requests it had on the wire at once. ``worker`` counts from 1; ``label`` says where
    it ran when that is more than a number (a Locust worker's id)."""

    worker: int
    requests: int
    errors: int = 0
    scheduling_lag_s: Distribution = Distribution()
    max_inflight: int | None = None
    label: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "label": self.label,
            "requests": self.requests,
            "errors": self.errors,
            "scheduling_lag_s": self.scheduling_lag_s.to_json(),
            "max_inflight": self.max_inflight,
        }

    @classmethod
    def from_json(cls, data: Any, path: str = "worker") -> WorkerShare:
        obj = _obj(data, path)
        return cls(
            worker=_int(obj, "worker", path),
            requests=_int(obj, "requests", path),
            errors=_int(obj, "errors", path),
            scheduling_lag_s=Distribution.from_json(
                obj.get("scheduling_lag_s"), _where(path, "scheduling_lag_s")
            ),
            max_inflight=_int(obj, "max_inflight", path) if obj.get("max_inflight") is not None else None,
            label=_str(obj, "label", path) or "",
        )


@dataclass(frozen=True, slots=True)
class ScenarioSummary:
    """One scenario of a report: counts, rates and distributions over its raw samples.

    Latencies count from each request's scheduled send time (see DEFINITIONS.md);
    ``samples_s`` keeps the raw latencies (capped, in send order) for significance
    tests, ``timeline`` (scheduled offset, latency, ok) triples for plots. ``workers``
    holds each worker process's share when the run used several (its statistics are over
    every worker's raw samples, merged). ``info``
    carries whatever else the producer attached (the pytest node id of a bench run,
    injected faults, the rate of a saturation step...), as JSON scalars.
    """

    name: str
    requests: int
    errors: int = 0
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    throughput_rps: float | None = None
    output_tokens_per_s: float | None = None
    latency_s: Distribution = Distribution()
    service_s: Distribution = Distribution()
    scheduling_lag_s: Distribution = Distribution()
    ttft_s: Distribution = Distribution()
    itl_s: Distribution = Distribution()
    tpot_s: Distribution = Distribution()
    stages: Mapping[str, Distribution] = field(default_factory=dict)
    cache: CacheCounts = CacheCounts()
    tokens: TokenCounts = TokenCounts()
    retries: int = 0
    samples_s: tuple[float, ...] = ()
    sample_keys: tuple[str, ...] = ()  # what each of samples_s sent (empty: not known for every one)
    timeline: tuple[tuple[float, float, int], ...] = ()
    goodput: Goodput | None = None
    load: str | None = None
    warmup: int = 0
    concurrency: int | None = None
    max_inflight: int | None = None  # the most requests on the wire at once (None: not observed)
    endpoint: str | None = None
    sweep: bool = False
    cpu_percent: float | None = None
    gated: bool = True  # False: not latency-gated against a baseline unless a rule names it
    gate_note: str = ""  # why not (e.g. "every request was answered from the cache")
    workers: tuple[WorkerShare, ...] = ()  # each worker process's share (empty: one process)
    info: Mapping[str, Scalar] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def distribution(self, name: str) -> Distribution:
        """``latency_s``, ``ttft_s``, ... by name, or a stage's (``stages.llm_call``)."""
        if name.startswith("stages."):
            return self.stages.get(name.removeprefix("stages."), Distribution())
        if name not in DISTRIBUTIONS:
            raise KeyError(f"unknown distribution {name!r}; known: {', '.join(DISTRIBUTIONS)}, stages.NAME")
        value: Distribution = getattr(self, name)
        return value

    def all_failed(self, *, ignore: Sequence[str] = ()) -> bool:
        """True when the run had requests and every one failed with an error kind not in
        ``ignore``: nothing was measured, and its latencies are those of errors."""
        counted = self.errors - sum(self.errors_by_kind.get(k, 0) for k in ignore)
        return bool(self.requests) and counted >= self.requests

    def error_kinds_text(self) -> str:
        """``"ConnectError 4, RequestTimeout 1"`` ("" when nothing failed)."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.errors_by_kind.items()))

    def replace(self, **changes: Any) -> ScenarioSummary:
        return dataclasses.replace(self, **changes)

    def with_info(self, **info: Scalar) -> ScenarioSummary:
        return dataclasses.replace(self, info={**self.info, **info})

    # -- JSON --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "errors_by_kind": dict(self.errors_by_kind),
            "wall_s": self.wall_s,
            "throughput_rps": _finite(self.throughput_rps),
            "output_tokens_per_s": _finite(self.output_tokens_per_s),
            **{name: getattr(self, name).to_json() for name in DISTRIBUTIONS},
            "stages": {name: d.to_json() for name, d in self.stages.items()},
            "cache": self.cache.to_json(),
            "tokens": self.tokens.to_json(),
            "retries": self.retries,
            "samples_s": list(self.samples_s),
            "sample_keys": list(self.sample_keys),
            "timeline": [list(point) for point in self.timeline],
            "load": self.load,
            "warmup": self.warmup,
            "concurrency": self.concurrency,
            "max_inflight": self.max_inflight,
            "endpoint": self.endpoint,
            "sweep": self.sweep,
            "cpu_percent": _finite(self.cpu_percent),
            "gated": self.gated,
            "gate_note": self.gate_note,
            "workers": [w.to_json() for w in self.workers],
            "info": dict(self.info),
        }
        if self.goodput is not None:
            out["goodput"] = self.goodput.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any, path: str = "scenario") -> ScenarioSummary:
        obj = _obj(data, path)
        name = _str(obj, "name", path, required=True)
        assert name is not None
        path = f"scenario {name!r}"
        stages = _obj(obj.get("stages") or {}, _where(path, "stages"))
        return cls(
            name=name,
            requests=_int(obj, "requests", path),
            errors=_int(obj, "errors", path),
            errors_by_kind=_counts(obj.get("errors_by_kind"), _where(path, "errors_by_kind")),
            wall_s=_num(obj, "wall_s", path, default=0.0) or 0.0,
            throughput_rps=_num(obj, "throughput_rps", path),
            output_tokens_per_s=_num(obj, "output_tokens_per_s", path),
            **{name_: Distribution.from_json(obj.get(name_), _where(path, name_)) for name_ in DISTRIBUTIONS},
            stages={
                str(k): Distribution.from_json(v, _where(path, f"stages.{k}")) for k, v in stages.items()
            },
            cache=CacheCounts.from_json(obj.get("cache"), _where(path, "cache")),
            tokens=TokenCounts.from_json(obj.get("tokens"), _where(path, "tokens")),
            retries=_int(obj, "retries", path),
            samples_s=tuple(_floats(obj.get("samples_s"), _where(path, "samples_s"))),
            sample_keys=_keys(obj.get("sample_keys"), _where(path, "sample_keys"), obj.get("samples_s")),
            timeline=_timeline(obj.get("timeline"), _where(path, "timeline")),
            goodput=Goodput.from_json(obj["goodput"], _where(path, "goodput"))
            if obj.get("goodput")
            else None,
            load=_str(obj, "load", path),
            warmup=_int(obj, "warmup", path),
            concurrency=_int(obj, "concurrency", path) if obj.get("concurrency") is not None else None,
            max_inflight=_int(obj, "max_inflight", path) if obj.get("max_inflight") is not None else None,
            endpoint=_str(obj, "endpoint", path),
            sweep=bool(obj.get("sweep", False)),
            cpu_percent=_num(obj, "cpu_percent", path),
            gated=bool(obj.get("gated", True)),
            gate_note=_str(obj, "gate_note", path) or "",
            workers=_workers(obj.get("workers"), _where(path, "workers")),
            info=_scalars(obj.get("info"), _where(path, "info")),
        )


def _workers(data: Any, path: str) -> tuple[WorkerShare, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ReportError(f"{path} should be a list of worker objects")
    return tuple(WorkerShare.from_json(w, f"{path}[{i}]") for i, w in enumerate(data))


def _floats(data: Any, path: str) -> list[float]:
    if data is None:
        return []
    if not isinstance(data, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in data
    ):
        raise ReportError(f"{path} should be a list of numbers")
    return [float(v) for v in data]


def _keys(data: Any, path: str, samples: Any) -> tuple[str, ...]:
    if not data:
        return ()
    if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
        raise ReportError(f"{path} should be a list of strings")
    if not isinstance(samples, list) or len(samples) != len(data):
        raise ReportError(f"{path} should have one key per value of samples_s")
    return tuple(data)


def _timeline(data: Any, path: str) -> tuple[tuple[float, float, int], ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ReportError(f"{path} should be a list of [offset, latency, ok] triples")
    out = []
    for point in data:
        if not isinstance(point, list) or len(point) != 3:
            raise ReportError(f"{path} should be a list of [offset, latency, ok] triples, got {point!r}")
        out.append((float(point[0]), float(point[1]), int(point[2])))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One acceptance criterion as measured: ``passed`` is None when it was skipped."""

    id: str
    threshold: float | str | None
    unit: str = ""
    observed: float | None = None
    passed: bool | None = None
    direction: Literal["<=", ">="] | None = None
    title: str = ""
    scenario: str | None = None
    note: str = ""
    skipped: bool = False

    @property
    def verdict(self) -> str:
        return "SKIP" if self.skipped or self.passed is None else ("PASS" if self.passed else "FAIL")

    def replace(self, **changes: Any) -> CriterionResult:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "threshold": self.threshold,
            "unit": self.unit,
            "observed": _finite(self.observed),
            "passed": self.passed,
            "direction": self.direction,
            "title": self.title,
            "scenario": self.scenario,
            "note": self.note,
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, data: Any, path: str = "criterion") -> CriterionResult:
        obj = _obj(data, path)
        cid = _str(obj, "id", path, required=True)
        assert cid is not None
        path = f"criterion {cid!r}"
        threshold = obj.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float, str))
        ):
            raise ReportError(f"{path}.threshold should be a number or a string, got {threshold!r}")
        passed = obj.get("passed")
        if passed is not None and not isinstance(passed, bool):
            raise ReportError(f"{path}.passed should be true, false or null, got {passed!r}")
        direction = obj.get("direction")
        if direction not in (None, "<=", ">="):
            raise ReportError(f"{path}.direction should be '<=' or '>=', got {direction!r}")
        return cls(
            id=cid,
            threshold=threshold,
            unit=_str(obj, "unit", path) or "",
            observed=_num(obj, "observed", path),
            passed=passed,
            direction=direction,
            title=_str(obj, "title", path) or "",
            scenario=_str(obj, "scenario", path),
            note=_str(obj, "note", path) or "",
            skipped=bool(obj.get("skipped", False)),
        )


@dataclass(frozen=True, slots=True)
class Report:
    """A run: where and how it ran (``run``), its criteria and its scenarios.

    ``complete`` is False when the run did not finish what it was asked to measure
    (interrupted, a scenario crashed, stopped early by ``-x``): such a report is never
    saved as a baseline, and the comparison refuses it; ``incomplete_reason`` says why.
    """

    run: Mapping[str, Scalar]
    criteria: tuple[CriterionResult, ...] = ()
    scenarios: tuple[ScenarioSummary, ...] = ()
    schema: str = REPORT_SCHEMA
    complete: bool = True
    incomplete_reason: str = ""

    @classmethod
    def build(
        cls,
        run: Mapping[str, Scalar],
        criteria: Iterable[CriterionResult] = (),
        scenarios: Iterable[ScenarioSummary] = (),
    ) -> Report:
        """A report stamped with the current UTC time unless ``run`` has a ``datetime``."""
        info = dict(run)
        info.setdefault("datetime", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        return cls(info, tuple(criteria), tuple(scenarios))

    def scenario(self, name: str) -> ScenarioSummary | None:
        return next((s for s in self.scenarios if s.name == name), None)

    def replace(self, **changes: Any) -> Report:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "complete": self.complete,
            "incomplete_reason": self.incomplete_reason,
            "run": dict(self.run),
            "criteria": [c.to_json() for c in self.criteria],
            "scenarios": [s.to_json() for s in self.scenarios],
        }

    @classmethod
    def from_json(cls, data: Any) -> Report:
        obj = _obj(data, "")
        schema = obj.get("schema")
        if schema != REPORT_SCHEMA:
            raise ReportError(f"the schema is {schema!r}, not {REPORT_SCHEMA!r}")
        criteria = obj.get("criteria", [])
        scenarios = obj.get("scenarios")
        if not isinstance(criteria, list):
            raise ReportError("'criteria' should be a list")
        if not isinstance(scenarios, list):
            raise ReportError("'scenarios' should be a list")
        complete = obj.get("complete", True)
        if not isinstance(complete, bool):
            raise ReportError(f"'complete' should be true or false, got {complete!r}")
        return cls(
            _scalars(obj.get("run"), "run"),
            tuple(CriterionResult.from_json(c, f"criteria[{i}]") for i, c in enumerate(criteria)),
            tuple(ScenarioSummary.from_json(s, f"scenarios[{i}]") for i, s in enumerate(scenarios)),
            schema=REPORT_SCHEMA,
            complete=complete,
            incomplete_reason=_str(obj, "incomplete_reason", "") or "",
        )
