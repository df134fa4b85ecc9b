"""The Pipeline over the real LLMClient and a respx route: stages, order, failures, cache, loop lag."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from pytest_iterate.cache.tiered import ResponseCache
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import Busy, RateLimited
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest, LLMResponse
from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.extract import Artifact, extract_artifact
from pytest_iterate.pipeline.runner import Pipeline
from pytest_iterate.pipeline.stages import (
    STAGE_NAMES,
    PostProcessStage,
    StageContext,
    default_stages,
    insert_after,
    replace_stage,
)
from pytest_iterate.pipeline.store import ArtifactStore
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path
from pytest_iterate.tokens.guard import TokenGuard

Answer = Callable[[dict[str, Any]], tuple[str, float]]


def config(tmp_path: Path, **kw: Any) -> IterateConfig:
    values: dict[str, Any] = {
        "base_url": MOCK_BASE_URL,
        "transport": "httpx",
        "cache_dir": str(tmp_path / "cache"),
        "max_attempts": 1,
    }
    values.update(kw)
    return IterateConfig.load(values, environ={}, pyproject=None)


def title_of(body: dict[str, Any]) -> str:
    user = body["messages"][-1]["content"]
    return str(user.split("\n", 1)[0].removeprefix("Task: "))


def python_answer(body: dict[str, Any]) -> tuple[str, float]:
    title = title_of(body)
    return f"Sure.\n```python\ndef solve():\n    return {title!r}\n```\n", 0.002


def route(router: respx.MockRouter, answer: Answer, calls: list[tuple[float, str]]) -> None:
    async def side_effect(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append((time.monotonic(), title_of(body)))
        text, delay = answer(body)
        if text == "429":
            return httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit"}})
        await asyncio.sleep(delay)
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 10},
            },
        )

    router.post("/chat/completions").mock(side_effect=side_effect)


@pytest.fixture
def router() -> Any:
    with respx.mock(base_url=MOCK_BASE_URL, assert_all_called=False) as r:
        yield r


def designs(n: int, **kw: Any) -> list[DesignRequest]:
    return [DesignRequest(f"d{i}", f"task {i}", ("do it",), **kw) for i in range(n)]


async def test_run_times_every_stage_and_stores_the_artifact(
    router: respx.MockRouter, tmp_path: Path
) -> None:
    calls: list[tuple[float, str]] = []
    route(router, python_answer, calls)
    metrics = IterateMetrics()
    async with Pipeline(config(tmp_path), metrics=metrics) as pipeline:
        result = await pipeline.run(DesignRequest("d1", "Make a stack", ("push",)))
        rows = await pipeline.store.rows()
    assert result.ok and result.error is None and result.complete and not result.partial
    assert [t.name for t in result.stages] == list(STAGE_NAMES)
    assert all(t.duration_s >= 0 and t.start_s > 1e9 for t in result.stages)
    assert result.artifact is not None and result.artifact.valid is True
    assert "Make a stack" in (result.artifact.code or "")
    assert result.usage is not None and result.usage.prompt_tokens == 20 and result.attempts == 1
    assert result.llm_s >= 0.002 and result.total_s >= result.llm_s
    assert 0 < result.wire_s <= result.llm_s  # the attempt itself, not the stage around it
    assert result.overhead_s == pytest.approx(result.total_s - result.wire_s)
    assert result.cache_key and result.cache_key.startswith("v1:")
    assert len(rows) == 1 and rows[0]["request_id"] == "d1" and rows[0]["valid"] is True
    assert [t["name"] for t in rows[0]["timings"]] == list(STAGE_NAMES[:-1])
    text = metrics.exposition().decode()
    for stage in STAGE_NAMES:
        assert f'iterate_stage_duration_seconds_count{{stage="{stage}"}} 1.0' in text


async def test_run_many_keeps_order_under_random_latency(router: respx.MockRouter, tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    delays = {f"task {i}": rng.uniform(0.0, 0.03) for i in range(30)}

    def answer(body: dict[str, Any]) -> tuple[str, float]:
        text, _ = python_answer(body)
        return text, delays[title_of(body)]

    calls: list[tuple[float, str]] = []
    route(router, answer, calls)
    async with Pipeline(config(tmp_path)) as pipeline:
        results = await pipeline.run_many(designs(30), concurrency=8)
    assert [r.request_id for r in results] == [f"d{i}" for i in range(30)]
    assert [r.index for r in results] == list(range(30))
    assert all(f"task {r.index}" in (r.artifact.code if r.artifact else "") for r in results)
    assert len({r.run_id for r in results}) == 1


async def test_one_failure_never_loses_the_others(router: respx.MockRouter, tmp_path: Path) -> None:
    def answer(body: dict[str, Any]) -> tuple[str, float]:
        return ("429", 0) if title_of(body) == "task 3" else python_answer(body)

    calls: list[tuple[float, str]] = []
    route(router, answer, calls)
    async with Pipeline(config(tmp_path)) as pipeline:
        results = await pipeline.run_many(designs(8), concurrency=4)
        stored = await pipeline.store.count()
    failed = [r for r in results if not r.ok]
    assert [r.request_id for r in failed] == ["d3"]
    assert isinstance(failed[0].error, RateLimited) and not failed[0].complete
    assert failed[0].stages[-1].name == "llm_call" and failed[0].stages[-1].ok is False
    with pytest.raises(RateLimited):
        failed[0].raise_for_error()
    assert sum(r.ok for r in results) == 7 and stored == 7


async def test_busy_from_the_client_is_a_failed_result(tmp_path: Path) -> None:
    class BusyOnSecond:
        base_url, model = MOCK_BASE_URL, "m"

        def __init__(self) -> None:
            self.n = 0

        async def call(self, request: LLMRequest, **_: Any) -> LLMResponse:
            self.n += 1
            if self.n == 2:
                raise Busy("queue full", retry_after_s=0.5)
            return LLMResponse("```python\nx = 1\n```", finish_reason="stop")

    async with Pipeline(config(tmp_path), client=BusyOnSecond()) as pipeline:
        results = await pipeline.run_many(designs(3), concurrency=1)
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, Busy) and results[1].error.retry_after_s == 0.5


async def test_invalid_code_is_stored_invalid_with_its_line(router: respx.MockRouter, tmp_path: Path) -> None:
    def answer(body: dict[str, Any]) -> tuple[str, float]:
        return "Here:\n```python\nimport os\n\n\ndef broken(:\n    pass\n```", 0

    calls: list[tuple[float, str]] = []
    route(router, answer, calls)
    store_path = tmp_path / "artifacts.sqlite"
    async with Pipeline(config(tmp_path, store_path=str(store_path))) as pipeline:
        result = await pipeline.run(DesignRequest("bad", "Broken", ("x",)))
    assert result.ok and result.artifact is not None
    assert result.artifact.valid is False and result.artifact.syntax_error_line == 4
    store = ArtifactStore(store_path)
    rows = await store.rows()
    await store.aclose()
    assert rows[0]["valid"] is False and rows[0]["syntax_error_line"] == 4
    assert rows[0]["code"].startswith("import os")


async def test_answer_without_code_is_a_warning(router: respx.MockRouter, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    route(router, lambda body: ("I would rather not.", 0), calls)
    async with Pipeline(config(tmp_path)) as pipeline:
        result = await pipeline.run(DesignRequest("n", "Nothing", ("x",)))
    assert result.ok and not result.complete and result.partial
    assert [w.action for w in result.warnings] == ["no_code"]


async def test_custom_stages_replace_and_insert(router: respx.MockRouter, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    route(router, python_answer, calls)

    def upper_extractor(text: str, language: str) -> Artifact:
        found = extract_artifact(text, language)
        return Artifact((found.code or "").upper(), language, None)

    class Tag:
        name = "tag"

        async def __call__(self, ctx: StageContext) -> None:
            ctx.extra["tagged"] = ctx.artifact is not None

    stages = insert_after(
        replace_stage(default_stages(), PostProcessStage(upper_extractor)), "post_process", Tag()
    )
    async with Pipeline(config(tmp_path), stages=stages) as pipeline:
        result = await pipeline.run(DesignRequest("c", "custom", ("x",)))
    assert result.artifact is not None and "DEF SOLVE" in (result.artifact.code or "")
    assert [t.name for t in result.stages][-3:] == ["post_process", "tag", "store"]
    assert result.extra == {"tagged": True}
    with pytest.raises(ValueError, match="no stage named 'nope'"):
        insert_after(default_stages(), "nope", Tag())


async def _max_loop_lag(run: Callable[[], Any]) -> tuple[float, Any]:
    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    task = asyncio.create_task(ticker())
    try:
        result = await run()
    finally:
        stop.set()
        await task
    return max(lags), result


def slow_extractor(text: str, language: str) -> Artifact:
    time.sleep(0.2)  # a CPU-heavy post-processor
    return extract_artifact(text, language)


async def test_blocking_post_processor_does_not_stall_the_loop(
    router: respx.MockRouter, tmp_path: Path
) -> None:
    delays = {f"task {i}": 0.02 + 0.03 * i for i in range(8)}  # staggered: calls overlap post-processing
    calls: list[tuple[float, str]] = []
    route(router, lambda body: (python_answer(body)[0], delays[title_of(body)]), calls)
    stages = replace_stage(default_stages(), PostProcessStage(slow_extractor))
    async with Pipeline(config(tmp_path, cpu_worker_pool_size=2), stages=stages) as pipeline:
        lag, results = await _max_loop_lag(lambda: pipeline.run_many(designs(8), concurrency=8))
    assert all(r.ok for r in results)
    assert lag < 0.08, f"event loop lag {lag * 1000:.0f} ms"
    for r in results:  # each call took its own latency, not a post-processor's 200 ms on top
        assert r.llm_s < delays[f"task {r.index}"] + 0.1, (r.index, r.llm_s)
    assert pipeline.pool.max_active == 2


async def test_control_inline_blocking_post_processor_stalls_the_loop(
    router: respx.MockRouter, tmp_path: Path
) -> None:
    """The same post-processor run on the loop shows the lag the pool avoids (the test can fail)."""

    class Inline:
        name = "post_process"

        async def __call__(self, ctx: StageContext) -> None:
            assert ctx.response is not None
            ctx.artifact = slow_extractor(ctx.response.text, ctx.request.language)

    calls: list[tuple[float, str]] = []
    route(router, python_answer, calls)
    stages = replace_stage(default_stages(), Inline())
    async with Pipeline(config(tmp_path), stages=stages) as pipeline:
        lag, _ = await _max_loop_lag(lambda: pipeline.run_many(designs(2), concurrency=2))
    assert lag >= 0.15


async def test_duplicates_served_from_cache_and_store_idempotent(
    router: respx.MockRouter, tmp_path: Path
) -> None:
    calls: list[tuple[float, str]] = []
    route(router, python_answer, calls)
    workload = load_workload(standard_workload_path())
    unique = len({d.id for d in workload})
    cfg = config(tmp_path, store_path=str(tmp_path / "a.sqlite"))
    cache = ResponseCache(cfg)
    try:
        async with Pipeline(cfg, cache=cache) as pipeline:
            first = await pipeline.run_many(workload, concurrency=10)
            assert len(calls) == unique
            shared = sum(r.cache_tier is not None or r.coalesced for r in first)
            assert shared == len(workload) - unique
            assert sum(r.llm_calls for r in first) == unique
            second = await pipeline.run_many(workload, concurrency=10)
            assert len(calls) == unique  # nothing new upstream
            assert all(r.cache_tier == "memory" and r.llm_calls == 0 for r in second)
            assert await pipeline.store.count() == unique
    finally:
        cache.close()


async def test_guard_split_runs_pieces_in_order_joins_and_warns(
    router: respx.MockRouter, tmp_path: Path
) -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        user = json.loads(request.content)["messages"][-1]["content"]
        sent.append(user)
        text = f"```python\npart_{len(sent)} = {len(user)}\n```"
        return httpx.Response(
            200,
            json={
                "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 10},
            },
        )

    router.post("/chat/completions").mock(side_effect=answer)
    cfg = config(tmp_path, context_window=1024, default_max_tokens=256, token_policy="split")
    design = DesignRequest("s", "long", ("keep every word of this requirement " * 400,))
    async with Pipeline(cfg, guard=TokenGuard(cfg)) as pipeline:
        result = await pipeline.run(design)
        whole = pipeline.services.builder.build(design).messages[-1]["content"]
    n = len(sent)
    assert n >= 3 and "".join(sent) == whole  # the pieces, in order, are the prompt
    assert result.ok and result.llm_calls == n
    answers = [f"```python\npart_{i} = {len(piece)}\n```" for i, piece in enumerate(sent, 1)]
    assert result.text == "\n\n".join(answers)  # joined in order, as GuardingCaller joins
    assert result.partial and not result.complete and [w.action for w in result.warnings] == ["split"]
    assert result.usage is not None and result.usage.prompt_tokens == 20 * n


async def test_json_stage_logs_for_every_stage(router: respx.MockRouter, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    route(router, python_answer, calls)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("pytest_iterate.test_pipeline_runner")
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    async with Pipeline(config(tmp_path), logger=logger) as pipeline:
        await pipeline.run_many(designs(3))
    stages = [(r.iterate["request_id"], r.iterate["stage"]) for r in records]  # type: ignore[attr-defined]
    assert sorted(stages) == sorted((f"d{i}", s) for i in range(3) for s in STAGE_NAMES)


async def test_owned_parts_closed_given_parts_left_open(router: respx.MockRouter, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    route(router, python_answer, calls)
    store = ArtifactStore(":memory:")
    pipeline = Pipeline(config(tmp_path), store=store)
    await pipeline.run(DesignRequest("o", "open", ("x",)))
    await pipeline.aclose()
    await pipeline.aclose()
    assert await store.count() == 1  # still usable
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await pipeline.run(DesignRequest("o", "open", ("x",)))


async def test_extraction_memoised_for_identical_answers(router: respx.MockRouter, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    route(router, lambda body: ("```python\nx = 1\n```", 0), calls)  # the same answer for every design
    async with Pipeline(config(tmp_path)) as pipeline:
        results = await pipeline.run_many(designs(6), concurrency=1)
    assert all(r.artifact == results[0].artifact for r in results) and len(calls) == 6
    assert pipeline.pool.calls == 1  # one extraction, five memo hits
    stage = PostProcessStage()
    assert stage.memo_size == 1024 and PostProcessStage(slow_extractor).memo_size == 0
    assert len(pipeline.stages[4]._memo) == 1  # type: ignore[attr-defined]
