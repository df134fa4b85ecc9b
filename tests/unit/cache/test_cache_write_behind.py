"""Disk writes behind the answer: no request waits for a commit, and no entry is lost on close."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.cache import ResponseCache
from pytest_iterate.cache.disk import DiskStore
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage
from pytest_iterate.doubles.mock import MockLLM
from pytest_iterate.doubles.mock.server import MockServer
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.runner import Pipeline


def _config(tmp_path: Path, **more: Any) -> IterateConfig:
    return IterateConfig(cache_dir=str(tmp_path / "cache"), **more)


def _request(i: int) -> LLMRequest:
    return LLMRequest(messages=({"role": "user", "content": f"q{i}"},), params={"temperature": 0})


def _answer(i: int) -> LLMResponse:
    return LLMResponse(text=f"a{i}", finish_reason="stop", usage=Usage(3, 1), model="m")


def _on_disk(tmp_path: Path, key: str) -> dict[str, Any] | None:
    store = DiskStore(tmp_path / "cache")
    try:
        return store.get(key)
    finally:
        store.close()


async def test_a_put_does_not_wait_for_the_disk_and_memory_serves_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, started = threading.Event(), threading.Event()
    original = DiskStore.put_many

    def slow_commit(self: DiskStore, *args: Any, **kwargs: Any) -> int:
        started.set()
        release.wait(10)  # a commit stuck behind another process's lock
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DiskStore, "put_many", slow_commit)
    cache = ResponseCache(_config(tmp_path))
    try:
        assert await asyncio.wait_for(cache.put("k0", _request(0), _answer(0)), 1.0)
        hit = await cache.get("k0")
        assert hit is not None and hit.cache_tier == "memory" and hit.text == "a0"
        await asyncio.to_thread(started.wait, 5)
        assert cache.pending_writes == 1 and _on_disk(tmp_path, "k0") is None  # still in the writer
        release.set()
        await cache.flush()
        assert cache.pending_writes == 0
        payload = _on_disk(tmp_path, "k0")
        assert payload is not None and payload["text"] == "a0"
    finally:
        release.set()
        cache.close()


async def test_entries_stored_together_are_committed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    original = DiskStore.put_many

    def counting(self: DiskStore, entries: Any, ttl_s: float | None = None) -> int:
        batches.append(len(entries))
        return original(self, entries, ttl_s)

    monkeypatch.setattr(DiskStore, "put_many", counting)
    cache = ResponseCache(_config(tmp_path))
    await asyncio.gather(*(cache.put(f"k{i}", _request(i), _answer(i)) for i in range(50)))
    await cache.flush()
    cache.close()
    assert sum(batches) == 50 and len(batches) < 50  # the first write alone, the rest batched
    assert all(_on_disk(tmp_path, f"k{i}") is not None for i in (0, 25, 49))


async def test_close_without_a_flush_writes_what_is_queued(tmp_path: Path) -> None:
    cache = ResponseCache(_config(tmp_path))
    for i in range(5):
        await cache.put(f"k{i}", _request(i), _answer(i))
    cache.close()  # the synchronous close, straight after the puts: nothing may be lost
    later = ResponseCache(_config(tmp_path))
    try:
        hits = [await later.get(f"k{i}") for i in range(5)]
        assert [h.cache_tier if h else None for h in hits] == ["disk"] * 5
    finally:
        later.close()


async def test_a_failed_commit_is_logged_and_memory_keeps_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def locked(self: Any, *args: Any, **kwargs: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    cache = ResponseCache(_config(tmp_path))
    await cache.put("warm", _request(1), _answer(1))
    await cache.flush()  # the diskcache folder is open now; its set() fails from here on
    disk = cache._disk
    assert disk is not None and disk._cache is not None
    monkeypatch.setattr(type(disk._cache), "set", locked)
    await cache.put("k", _request(0), _answer(0))
    await cache.flush()
    assert "disk cache write of 1 entries failed" in caplog.text and "database is locked" in caplog.text
    hit = await cache.get("k")
    assert hit is not None and hit.cache_tier == "memory"
    monkeypatch.undo()
    cache.close()


async def test_a_pipeline_makes_the_writes_of_a_cache_it_was_given_durable(tmp_path: Path) -> None:
    server = MockServer(MockLLM("zero", seed=1))
    await server.start()
    config = _config(tmp_path, base_url=server.base_url)
    cache = ResponseCache(config)
    try:
        async with Pipeline(config, cache=cache) as pipeline:
            result = await pipeline.run(DesignRequest(id="d1", title="t", requirements=("r",)))
        assert result.ok and result.cache_key is not None
        # the pipeline did not own the cache: still open, and its entry already on disk
        assert cache.pending_writes == 0 and _on_disk(tmp_path, result.cache_key) is not None
    finally:
        cache.close()
        await server.stop()
