"""Every acceptance criterion fails when what it guards is broken.

A criterion is only worth what it catches (docs/DESIGN.md). Each test below runs the scenario a
criterion reads twice, in process and on the embedded mock: as shipped, where the
criterion passes, and with one thing broken (the cache, the retries, the guard, the
metrics...), where it must fail. A criterion that passed both ways would be a gate that
cannot fail. Thresholds are lowered where the mock's fast profile would otherwise pass
anything (a threshold is configurable, and what is tested is that the measurement moves).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.cache.keys import KeyBuilder
from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.pacing import RatePacer, Ticket, parse_reset_duration
from pytest_iterate.client.retry import RetryPolicy
from pytest_iterate.client.telemetry import StageRecorder
from pytest_iterate.client.throttle import Throttle
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.profiles import load_profile
from pytest_iterate.doubles.mock.server import MockServer
from pytest_iterate.endpoint import Endpoint
from pytest_iterate.pipeline.stages import PromptBuildStage
from pytest_iterate.pipeline.workers import WorkerPool
from pytest_iterate.plugin.acceptance.criteria import CRITERIA, CRITERIA_BY_ID
from pytest_iterate.plugin.acceptance.scenarios import NoMeasurement, ScenarioRunner
from pytest_iterate.plugin.options import IterateOptions
from pytest_iterate.tokens.counter import TokenCounter
from pytest_iterate.tokens.guard import TokenGuard

Breakage = Callable[[pytest.MonkeyPatch], None]


def _profile(path: Path, latency_s: float) -> str:
    """A mock profile answering in about ``latency_s`` (fixed), 40 tokens."""
    path.write_text(
        json.dumps(
            {
                "name": path.stem,
                "ttft_base_s": {"dist": "fixed", "mean": latency_s},
                "itl_s": {"dist": "fixed", "mean": 0.0},
                "output_tokens": {"dist": "fixed", "mean": 40},
                "capacity": 64,
                "context_window": 16384,
            }
        )
    )
    return str(path)


@pytest.fixture
def measure(tmp_path: Path) -> Iterator[Callable[..., tuple[float, bool, str]]]:
    """``measure(criterion_id, profile=..., thresholds=..., endpoint=...)``: run the criterion's
    scenario once in a fresh runner and return (observed, passed, note)."""
    runners: list[ScenarioRunner] = []

    def run(
        criterion: str,
        *,
        profile: str = "fast",
        endpoint: str = "mock",
        thresholds: dict[str, float] | None = None,
        concurrency: tuple[int, ...] = (5, 10, 16),
    ) -> tuple[float, bool, str]:
        options = IterateOptions(
            enabled=True,
            profile=profile,
            endpoint=endpoint,
            concurrency=concurrency,
            thresholds=thresholds or {},
        )
        runner = ScenarioRunner(options, workdir=tmp_path / f"work{len(runners)}")
        runners.append(runner)
        try:
            observed, scenario = runner.observe(criterion)
        except NoMeasurement as exc:  # the suite fails such a criterion: "nothing measured"
            return math.nan, False, str(exc)
        passed = CRITERIA_BY_ID[criterion].passes(observed, options.threshold_for(criterion))
        return observed, passed, scenario.notes.get(criterion, "")

    yield run
    for runner in runners:
        runner.close()


def _slow_prompt_build(seconds: float) -> Breakage:
    def breakage(mp: pytest.MonkeyPatch) -> None:
        original = PromptBuildStage.__call__

        async def slow(self: PromptBuildStage, ctx: Any) -> None:
            await asyncio.sleep(seconds)  # a slow step outside the LLM call
            await original(self, ctx)

        mp.setattr(PromptBuildStage, "__call__", slow)

    return breakage


def _env(**values: str) -> Breakage:
    def breakage(mp: pytest.MonkeyPatch) -> None:
        for name, value in values.items():
            mp.setenv(f"ITERATE_{name.upper()}", value)

    return breakage


def _key_too_broad(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(KeyBuilder, "__call__", lambda self, request: f"v1:{request.model}:{request.max_tokens}")


def _retries_unbounded(mp: pytest.MonkeyPatch) -> None:
    original = RetryPolicy.from_config.__func__  # type: ignore[attr-defined]

    def looser(cls: type[RetryPolicy], config: Any) -> RetryPolicy:
        policy = original(cls, config)
        return RetryPolicy(policy.max_attempts + 10, 0.001, 0.01, policy.retry_after_cap_s)

    mp.setattr(RetryPolicy, "from_config", classmethod(looser))


class _HalfCounter(TokenCounter):
    """Counts every text at half its size: every other token id is dropped, so counts, script
    profiles and the guard's bounds all come out halved (the mock keeps counting right)."""

    def encode(self, text: str) -> list[int]:
        return super().encode(text)[::2]


def _guard_undercounts(mp: pytest.MonkeyPatch) -> None:
    original = TokenGuard.__init__

    def undercounting(self: TokenGuard, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.counter = _HalfCounter()

    mp.setattr(TokenGuard, "__init__", undercounting)


def _guard_off(mp: pytest.MonkeyPatch) -> None:
    original = Endpoint.pipeline

    def unguarded(self: Endpoint, config: Any, **parts: Any) -> Any:
        return original(self, config, guard=None, **parts)

    mp.setattr(Endpoint, "pipeline", unguarded)


def _metrics_not_recorded(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(LLMClient, "_count", lambda self, model, outcome: None)


def _store_logs_dropped(mp: pytest.MonkeyPatch) -> None:
    original = StageRecorder._record

    def drop_store(self: StageRecorder, timing: Any) -> None:
        if timing.name != "store":
            original(self, timing)

    mp.setattr(StageRecorder, "_record", drop_store)


def _cpu_on_the_loop(mp: pytest.MonkeyPatch) -> None:
    async def inline(self: WorkerPool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        deadline = time.thread_time() + 0.04  # 40 ms of pure-Python work per answer, on the loop
        while time.thread_time() < deadline:
            pass
        return fn(*args, **kwargs)

    mp.setattr(WorkerPool, "run", inline)


def _busy_replaced_by_waiting(mp: pytest.MonkeyPatch) -> None:
    original = Throttle.__init__

    def patient(self: Throttle, max_concurrent: int, max_queue: int, *args: Any, **kwargs: Any) -> None:
        original(self, max_concurrent, 10**6, *args, **kwargs)

    mp.setattr(Throttle, "__init__", patient)


def _busy_without_retry_after(mp: pytest.MonkeyPatch) -> None:
    mp.setattr("pytest_iterate.service.protocol.retry_after_headers", lambda seconds: {})


def _throttle_off(mp: pytest.MonkeyPatch) -> None:
    def blind(self: Throttle, headers: Any, *, status: int = 200, ticket: Ticket | None = None) -> None:
        return None  # the rate-limit headers are read by nobody: nothing is paced

    mp.setattr(Throttle, "observe_headers", blind)


def _reset_waited_out(mp: pytest.MonkeyPatch) -> None:
    """The throttle before pacing: at remaining 0 every send waits out the whole reset."""

    def old(
        self: RatePacer,
        headers: Any,
        *,
        status: int = 200,
        ticket: Ticket | None = None,
        now: float | None = None,
    ) -> None:
        for budget in (self.requests, self.tokens):
            remaining = headers.get(f"x-ratelimit-remaining-{budget.name}")
            reset = parse_reset_duration(headers.get(f"x-ratelimit-reset-{budget.name}"))
            if remaining is not None and float(remaining) <= budget.floor and reset:
                budget.not_before = max(budget.not_before, time.monotonic() + reset)

    mp.setattr(RatePacer, "observe", old)


# (criterion, what breaks, breakage, measure() keywords; a str profile value "slow:S" is a
#  fixed-latency profile of S seconds)
CASES: list[tuple[str, str, Breakage, dict[str, Any]]] = [
    (
        "latency.e2e_mean",
        "a slow step outside the LLM call",
        _slow_prompt_build(0.25),
        {"thresholds": {"latency.e2e_mean": 0.15}},  # fast profile: ~30 ms a request, 60 ms loaded
    ),
    (
        "latency.iteration_mean_c5",
        "the pipeline capped at one request in flight",
        _env(max_concurrent_requests="1"),
        {"profile": "slow:0.04", "thresholds": {"latency.iteration_mean_c5": 0.025}},
    ),
    ("latency.overhead_mean", "a slow step outside the LLM call", _slow_prompt_build(0.35), {}),
    (
        "latency.overhead_mean",
        "a pipeline that queues (one slot for 16 concurrent requests)",
        _env(max_concurrent_requests="1"),
        {"profile": "slow:0.04"},
    ),
    (
        "throughput.requests_per_min",
        "the pipeline capped at one request in flight",
        _env(max_concurrent_requests="1"),
        {"profile": "slow:0.04", "thresholds": {"throughput.requests_per_min": 5000}},
    ),
    (
        "throughput.designs_100",
        "the pipeline capped at one request in flight",
        _env(max_concurrent_requests="1"),
        {"profile": "slow:0.04", "thresholds": {"throughput.designs_100": 2.0}},
    ),
    (
        "concurrency.no_timeouts_c10",
        "a timeout shorter than the endpoint's queue",
        _env(request_timeout_s="0.06", max_attempts="1"),
        {"profile": "slow:0.04"},
    ),
    ("cache.hit_rate_repeat", "the cache off", _env(cache_enabled="false"), {}),
    ("cache.hit_rate_repeat", "a cache key that ignores the messages", _key_too_broad, {}),
    ("tokens.no_overflow", "the guard counting prompts at half their size", _guard_undercounts, {}),
    ("tokens.no_overflow", "the guard off", _guard_off, {}),
    (
        "tokens.no_overflow",
        "an endpoint window smaller than the pipeline assumes",
        _env(context_window="4096"),
        {},
    ),
    ("errors.rate_with_retries", "retries off", _env(max_attempts="1"), {}),
    ("retries.bounded", "the retry bound removed", _retries_unbounded, {}),
    (
        "cpu.utilization",
        "CPU-heavy post-processing on the event loop",
        _cpu_on_the_loop,
        {"profile": "slow:0.1"},
    ),
    ("observability.stage_logs", "the store stage's logs dropped", _store_logs_dropped, {}),
    ("observability.metrics_endpoint", "request counters not recorded", _metrics_not_recorded, {}),
    (
        "observability.metrics_endpoint",
        "the store stage's logs dropped (its histogram disagrees)",
        _store_logs_dropped,
        {},
    ),
    ("degradation.busy_fast", "Busy replaced by waiting in line", _busy_replaced_by_waiting, {}),
    ("degradation.busy_fast", "the 503 without Retry-After", _busy_without_retry_after, {}),
    ("ratelimit.rejected", "the throttle off (rate-limit headers ignored)", _throttle_off, {}),
    (
        "ratelimit.rate_achieved",
        "the whole reset waited out instead of pacing (the throttle before pacing)",
        _reset_waited_out,
        {},
    ),
]


def _resolve(kwargs: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    out = dict(kwargs)
    profile = out.get("profile", "")
    if profile.startswith("slow:"):
        out["profile"] = _profile(tmp_path / "slow.json", float(profile.split(":", 1)[1]))
    return out


def test_every_criterion_has_a_breakage_case() -> None:
    assert {c.id for c in CRITERIA} == {case[0] for case in CASES}


@pytest.mark.parametrize(
    ("criterion", "what", "breakage", "kwargs"), CASES, ids=[f"{c}: {w}" for c, w, _b, _k in CASES]
)
def test_the_criterion_passes_as_shipped_and_fails_when_broken(
    criterion: str,
    what: str,
    breakage: Breakage,
    kwargs: dict[str, Any],
    measure: Callable[..., tuple[float, bool, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    kwargs = _resolve(kwargs, tmp_path)
    observed, passed, note = measure(criterion, **kwargs)
    assert passed, f"{criterion} fails as shipped: observed {observed} ({note})"
    breakage(monkeypatch)
    observed_broken, passed_broken, note_broken = measure(criterion, **kwargs)
    assert not passed_broken, (
        f"{criterion} still passes with {what}: observed {observed_broken} ({note_broken})"
    )


def test_an_external_endpoint_failing_30_percent_fails_the_error_criterion_and_says_so(
    measure: Callable[..., tuple[float, bool, str]],
) -> None:
    # the mock on its own URL, treated as any external endpoint: 30 % of requests fail every attempt
    server = MockServer(MockLLM(load_profile("fast"), faults=_plan(["503x10=0.3"]))).start_in_thread()
    try:
        observed, passed, note = measure("errors.rate_with_retries", endpoint=server.base_url)
        assert not passed and observed > 10.0, note
        assert "nothing injected against" in note and "ServerError" in note
        latency, latency_passed, latency_note = measure("latency.e2e_mean", endpoint=server.base_url)
        assert latency_passed and not math.isnan(latency)
        assert "successful requests; " in latency_note and "requests failed (ServerError" in latency_note
    finally:
        server.stop()


def _plan(rules: list[str]) -> Any:
    from pytest_iterate.doubles.mock.faults import FaultPlan

    return FaultPlan.parse(rules)
