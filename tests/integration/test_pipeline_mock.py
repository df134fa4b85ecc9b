"""The standard workload end to end over loopback HTTP: 100 designs, cache, SQLite, stage timings.

The endpoint is a real aiohttp.web server on 127.0.0.1 (port 0) answering each chat
request after a few milliseconds with a fenced python block, the way the mock's
``fast`` profile does; the pipeline is built by ``Pipeline.from_config`` with the
default aiohttp transport, a real diskcache folder and a SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.profiles import load_profile
from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL, mock_router
from pytest_iterate.doubles.mock.server import MockServer
from pytest_iterate.pipeline.runner import Pipeline
from pytest_iterate.pipeline.stages import STAGE_NAMES
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path


class Endpoint:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        await asyncio.sleep(0.003)
        title = body["messages"][-1]["content"].split("\n", 1)[0]
        text = f"Design notes.\n```python\ndef design():\n    return {title!r}\n```\n"
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
            }
        )


@pytest.fixture
async def endpoint(loopback: Callable[[web.Application], Awaitable[str]]) -> Endpoint:
    ep = Endpoint()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", ep.chat)
    ep.url = await loopback(app) + "/v1"
    return ep


async def test_100_designs_in_order_timed_stored_and_cached(endpoint: Endpoint, tmp_path: Path) -> None:
    store_path = tmp_path / "artifacts.sqlite"
    cfg = IterateConfig.load(
        {"base_url": endpoint.url, "cache_dir": str(tmp_path / "cache"), "store_path": str(store_path)},
        environ={},
        pyproject=None,
    )
    workload = load_workload(standard_workload_path())
    unique = {d.id for d in workload}

    async with Pipeline.from_config(cfg, guard=None) as pipeline:
        results = await pipeline.run_many(workload, concurrency=10)
        metrics_text = pipeline.metrics.exposition().decode()

    # all results, in order
    assert [r.request_id for r in results] == [d.id for d in workload]
    assert all(r.ok and r.complete for r in results), [r.error for r in results if not r.ok][:3]
    # every stage of every request timed
    for r in results:
        assert [t.name for t in r.stages] == list(STAGE_NAMES)
        assert all(t.start_s > 1e9 and t.duration_s >= 0 for t in r.stages)
        assert r.total_s >= r.llm_s >= 0 and r.overhead_s >= 0
    for stage in STAGE_NAMES:
        assert f'iterate_stage_duration_seconds_count{{stage="{stage}"}} 100.0' in metrics_text
    # the duplicates served from the cache (or joined to the identical call in flight)
    assert len(endpoint.bodies) == len(unique) == 70
    from_cache = [r for r in results if r.cache_tier is not None or r.coalesced]
    assert len(from_cache) == 30
    assert all(r.llm_calls == 0 for r in from_cache)
    # the artifacts in SQLite: one row per unique request, python ones valid
    with sqlite3.connect(store_path) as conn:
        rows = conn.execute(
            "SELECT request_id, language, valid, code, timings_json FROM artifacts"
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(unique)
    assert all(r[2] == 1 for r in rows if r[1] == "python")
    assert all(r[3] and "def design" in r[3] for r in rows)
    assert all(len(json.loads(r[4])) == len(STAGE_NAMES) - 1 for r in rows)

    # a repeated run (a new process would see the same): all from the disk cache, no new rows
    async with Pipeline.from_config(cfg, guard=None) as again:
        repeat = await again.run_many(workload, concurrency=10)
    assert len(endpoint.bodies) == 70
    assert all(r.ok and r.cache_tier in {"disk", "memory"} for r in repeat)
    assert sum(r.cache_tier == "disk" for r in repeat) == 70
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0] == 70


async def test_malformed_workload_line_names_file_and_line_and_writes_nothing(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    from pytest_iterate.client.errors import WorkloadError

    lines = standard_workload_path().read_text(encoding="utf-8").splitlines()
    bad_at = 40
    lines[bad_at - 1] = lines[bad_at - 1].replace('"requirements": [', '"requirements": "oops", "x": [', 1)
    workload = tmp_path / "broken.jsonl"
    workload.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store_path = tmp_path / "artifacts.sqlite"
    cfg = IterateConfig.load(
        {"base_url": endpoint.url, "cache_dir": str(tmp_path / "cache"), "store_path": str(store_path)},
        environ={},
        pyproject=None,
    )
    async with Pipeline.from_config(cfg, guard=None) as pipeline:
        with pytest.raises(WorkloadError) as info:
            await pipeline.run_workload(workload)
        assert await pipeline.store.count() == 0
    assert str(info.value).startswith(f"{workload}:{bad_at}: ")
    assert info.value.line == bad_at
    assert endpoint.bodies == []


async def test_100_designs_on_the_project_mock_fast_profile(tmp_path: Path) -> None:
    """The same run against the loopback mock server (fast profile)."""
    core = MockLLM(load_profile("fast"), seed=1)
    server = MockServer(core, host="127.0.0.1", port=0)
    await server.start()
    try:
        cfg = IterateConfig.load(
            {
                "base_url": server.base_url,
                "cache_dir": str(tmp_path / "cache"),
                "store_path": str(tmp_path / "a.sqlite"),
            },
            environ={},
            pyproject=None,
        )
        workload = load_workload(standard_workload_path())
        async with Pipeline.from_config(cfg) as pipeline:
            results = await pipeline.run_many(workload, concurrency=10)
            stored = await pipeline.store.count()
    finally:
        await server.stop()
    assert [r.request_id for r in results] == [d.id for d in workload]
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    assert all([t.name for t in r.stages] == list(STAGE_NAMES) for r in results)
    assert sum(r.llm_calls for r in results) == 70
    assert sum(r.cache_tier is not None or r.coalesced for r in results) == 30
    assert stored == 70
    python = [r for r in results if r.artifact is not None and r.artifact.language == "python"]
    assert python and all(r.artifact is not None and r.artifact.valid for r in python)


async def test_100_designs_on_the_project_mock_in_process(tmp_path: Path) -> None:
    """MockLLM (fast profile) behind its respx router: answers sized by the profile, usage counted."""
    core = MockLLM(load_profile("fast"), seed=3)
    cfg = IterateConfig.load(
        {
            "base_url": MOCK_BASE_URL,
            "transport": "httpx",
            "cache_dir": str(tmp_path / "cache"),
            "store_path": str(tmp_path / "a.sqlite"),
        },
        environ={},
        pyproject=None,
    )
    workload = load_workload(standard_workload_path())
    with mock_router(core):
        async with Pipeline.from_config(cfg) as pipeline:
            results = await pipeline.run_many(workload, concurrency=10)
            stored = await pipeline.store.count()
    assert [r.request_id for r in results] == [d.id for d in workload]
    assert all(r.ok and r.complete for r in results), [r.error for r in results if not r.ok][:3]
    assert all([t.name for t in r.stages] == list(STAGE_NAMES) for r in results)
    assert sum(r.llm_calls for r in results) == 70
    assert sum(r.cache_tier is not None or r.coalesced for r in results) == 30
    assert all(r.usage is not None and r.usage.prompt_tokens > 0 for r in results)
    assert all(r.artifact is not None and r.artifact.valid for r in results)
    assert stored == 70
