"""Batching in the pipeline: misses share calls, every item keeps its stages, cache entry and result.

Most tests run the standard workload against the mock on loopback (its answers name the
request they answer, so an item handed another item's answer is caught); the fallback
tests use a respx upstream that refuses list prompts and garbles packed answers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from pytest_iterate.batch.call import native_request
from pytest_iterate.batch.packing import item_header, parse_packed_prompt
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.doubles.mock.digest import answer_digest, request_digest
from pytest_iterate.endpoint import Endpoint, EndpointSpec, open_endpoint
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.runner import Pipeline, PipelineResult
from pytest_iterate.pipeline.stages import STAGE_NAMES
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

BASE = "http://batch.test/v1"


def config(endpoint: Endpoint | None, tmp_path: Path, **kw: Any) -> IterateConfig:
    values: dict[str, Any] = {"cache_dir": str(tmp_path / "cache"), "max_concurrent_requests": 16}
    values.update(kw)
    base = endpoint.config_values(**values) if endpoint is not None else {"base_url": BASE, **values}
    return IterateConfig.load(base, environ={}, pyproject=None)


def own_answer(pipeline: Pipeline, design: DesignRequest, result: PipelineResult) -> bool:
    """The answer is tagged with this design's request, sent alone or inside a native batch."""
    request = pipeline.services.builder.build(design)
    model = pipeline.services.model
    allowed = {request_digest(request.body(model)), request_digest(native_request(request).body(model))}
    return answer_digest(result.text) in allowed


@pytest.mark.parametrize("strategy", ["auto", "packed"])
async def test_the_standard_workload_in_batches_each_item_with_its_own_stages_answer_and_entry(
    strategy: str, tmp_path: Path
) -> None:
    items = load_workload(standard_workload_path())
    async with open_endpoint(EndpointSpec("mock", profile="fast")) as ep:
        assert ep.core is not None
        cfg = config(ep, tmp_path, batch_size=8, batch_strategy=strategy)
        async with ep.pipeline(cfg) as pipeline:
            results = await pipeline.run_many(items, concurrency=16)
            calls = ep.core.stats.completions
            counted = pipeline.metrics.registry.get_sample_value(
                "iterate_requests_total", {"model": "gpt-4o-mini", "outcome": "ok"}
            )
            assert pipeline.batcher is not None and pipeline.batcher.stats.batches > 0
        assert all(r.ok for r in results)
        assert all([t.name for t in r.stages] == list(STAGE_NAMES) for r in results)
        assert all(own_answer(pipeline, d, r) for d, r in zip(items, results, strict=True))
        assert sum(r.llm_calls for r in results) == calls == counted  # each call counted once
        assert calls < 70  # 70 unique designs, fewer calls
        batched = [r for r in results if r.extra.get("batch", {}).get("size", 1) > 1]
        assert batched and {r.extra["batch"]["strategy"] for r in batched} <= {"native", "packed"}
        if strategy == "packed":
            assert {r.extra["batch"]["strategy"] for r in batched} == {"packed"}

        # a new pipeline on the same cache folder: every design hits its own entry
        async with ep.pipeline(config(ep, tmp_path, batch_size=8)) as again:
            repeat = await again.run_many(items, concurrency=16)
        assert all(r.cache_tier == "disk" or r.cache_tier == "memory" for r in repeat)
        assert [r.text for r in repeat] == [r.text for r in results]
        assert ep.core.stats.completions == calls


async def test_batch_size_1_keeps_the_pipeline_as_it_was(tmp_path: Path) -> None:
    items = load_workload(standard_workload_path())[:20]
    async with open_endpoint(EndpointSpec("mock", profile="fast")) as ep:
        assert ep.core is not None
        async with ep.pipeline(config(ep, tmp_path)) as pipeline:
            assert pipeline.batcher is None and pipeline.services.batcher is None
            results = await pipeline.run_many(items, concurrency=8)
        assert all(r.ok and "batch" not in r.extra for r in results)
        assert ep.core.stats.completions == sum(r.llm_calls for r in results)


async def test_a_batch_too_long_for_the_window_is_not_cut_but_split_in_halves(tmp_path: Path) -> None:
    # 8 design prompts of ~450 tokens (+128 to answer) do not fit a 2,048-token window together;
    # halves do not either, pairs do
    items = [d for d in load_workload(standard_workload_path()) if d.max_tokens == 128][:8]
    spec = EndpointSpec("mock", profile="fast", context_window=2048)
    async with open_endpoint(spec) as ep:
        assert ep.core is not None
        cfg = config(ep, tmp_path, batch_size=8, context_window=2048, batch_strategy="packed")
        async with ep.pipeline(cfg) as pipeline:
            results = await pipeline.run_many(items, concurrency=8)
            counted = pipeline.metrics.registry.get_sample_value(
                "iterate_requests_total", {"model": "gpt-4o-mini", "outcome": "ok"}
            )
    assert all(r.ok and not r.warnings for r in results), [r.error for r in results]
    assert ep.core.stats.faults.get("context_length_exceeded", 0) == 0  # nothing too long was sent
    assert all(own_answer(pipeline, d, r) for d, r in zip(items, results, strict=True))
    assert ep.core.stats.completions < len(items)  # still fewer calls than items
    # a refused batch sent nothing and counts nothing: the items' calls are the client's
    assert sum(r.llm_calls for r in results) == ep.core.stats.completions == counted
    assert "packed" in {r.extra["batch"]["strategy"] for r in results}  # pairs that fit went together


async def test_a_truncated_item_keeps_its_warning_and_is_not_stored(tmp_path: Path) -> None:
    long = DesignRequest(
        "long", "A long one", tuple(f"requirement {i} " * 20 for i in range(60)), max_tokens=64
    )
    short = [DesignRequest(f"s{i}", f"Short {i}", ("be short",), max_tokens=64) for i in range(3)]
    async with open_endpoint(EndpointSpec("mock", profile="fast", context_window=16384)) as ep:
        cfg = config(ep, tmp_path, batch_size=4, context_window=1024, batch_strategy="packed")
        async with ep.pipeline(cfg) as pipeline:
            results = await pipeline.run_many([long, *short], concurrency=4)
            assert pipeline.cache is not None
            stored = [await pipeline.cache.get(r.cache_key or "", record=False) for r in results]
    assert all(r.ok for r in results)
    assert [w.action for w in results[0].warnings][:1] == ["truncate"] and results[0].partial
    assert stored[0] is None and all(s is not None for s in stored[1:])


class GarblingUpstream:
    """Refuses list prompts (500) and answers packed prompts with the second item missing."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        if request.url.path.endswith("/v1/completions"):
            return httpx.Response(500, json={"error": {"message": "list prompts unsupported"}})
        content = body["messages"][-1]["content"]
        items = parse_packed_prompt(content)
        if items is None:
            text = f"alone: {content[:20]}"
        else:
            text = "\n".join(f"{item_header(i)}\npacked: {p[:20]}" for i, p in enumerate(items, 1) if i != 2)
        usage = {"prompt_tokens": 10, "completion_tokens": 5}
        return httpx.Response(
            200,
            json={
                "choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}],
                "usage": usage,
            },
        )


async def test_when_batching_fails_no_item_is_lost(tmp_path: Path) -> None:
    upstream = GarblingUpstream()
    designs = [DesignRequest(f"d{i}", f"Design {i}", ("works",), max_tokens=64) for i in range(4)]
    cfg = config(None, tmp_path, batch_size=4, transport="httpx", max_attempts=1)
    with respx.mock(assert_all_called=False) as router:
        router.post(url__startswith=BASE).mock(side_effect=upstream)
        async with Pipeline.from_config(cfg) as pipeline:
            results = await pipeline.run_many(designs, concurrency=4)
    assert all(r.ok for r in results), [r.error for r in results]
    assert [r.text.split(":")[0] for r in results] == ["packed", "alone", "packed", "packed"]
    assert [r.extra["batch"]["strategy"] for r in results] == ["packed", "concurrent", "packed", "packed"]
    # the refused probe, the packed call, the missing item alone: every call counted once
    assert len(upstream.bodies) == 3 == sum(r.llm_calls for r in results)


async def test_the_pipeline_caller_batches_too(tmp_path: Path) -> None:
    workload = load_workload(standard_workload_path())
    alike = [d for d in workload if (d.language, d.max_tokens) == ("python", 128)]
    items = list({d.title: d for d in alike}.values())[:6]  # six different designs that can share a call
    async with open_endpoint(EndpointSpec("mock", profile="fast")) as ep:
        assert ep.core is not None
        async with ep.pipeline(config(ep, tmp_path, batch_size=8)) as pipeline:
            requests = [pipeline.services.builder.build(d) for d in items]
            answers = await asyncio.gather(*(pipeline.caller(r) for r in requests))
            again = await asyncio.gather(*(pipeline.caller(r) for r in requests))
    assert ep.core.stats.completions == 1  # one native batch for six
    model = pipeline.services.model
    for request, answer in zip(requests, answers, strict=True):
        assert answer_digest(answer.text) == request_digest(native_request(request).body(model))
    assert all(a.cache_tier == "memory" for a in again)
