"""Memory LRU, TTLs, the two-tier ResponseCache: promotion, policy, stats, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_iterate.cache import MemoryLRU, ResponseCache
from pytest_iterate.cache.disk import DiskStore
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import GuardWarning, LLMRequest, LLMResponse, Usage

DET = LLMRequest(messages=({"role": "user", "content": "hi"},), params={"temperature": 0})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock | None = None, **cfg: object) -> ResponseCache:
    clock = clock or Clock()
    config = IterateConfig(cache_dir=str(tmp_path / "cache"), **cfg)  # type: ignore[arg-type]
    return ResponseCache(config, IterateMetrics(), clock=clock, wall_clock=clock)


def answer(text: str = "four") -> LLMResponse:
    return LLMResponse(
        text=text,
        finish_reason="stop",
        usage=Usage(3, 1),
        model="m",
        chunks=["fo", "ur"],
        chunk_times_s=[0.1, 0.2],
        raw={"id": "x"},
    )


def test_lru_evicts_least_recently_used_and_expires() -> None:
    clock = Clock()
    lru: MemoryLRU[int] = MemoryLRU(2, clock=clock)
    lru.put("a", 1)
    lru.put("b", 2, ttl_s=5)
    assert lru.get("a") == 1  # a is now most recent
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and len(lru) == 2
    lru.put("d", 4, ttl_s=5)
    clock.now += 5
    assert lru.get("d") is None and "d" not in lru


async def test_put_then_hits_memory_then_disk_after_restart(tmp_path: Path) -> None:
    cache = make(tmp_path)
    assert await cache.get("v1:k") is None
    assert await cache.put("v1:k", DET, answer())
    hit = await cache.get("v1:k")
    assert hit is not None and hit.cache_tier == "memory" and hit.cache_key == "v1:k"
    assert (hit.text, hit.usage, hit.chunks) == ("four", Usage(3, 1), ["fo", "ur"])
    assert hit.chunk_times_s == [0.1, 0.2]
    hit.chunks.append("mutated")
    again = await cache.get("v1:k")
    assert again is not None and again.chunks == ["fo", "ur"]  # the stored entry is untouched
    cache.close()

    fresh = make(tmp_path)  # a new process: empty memory, same folder
    disk_hit = await fresh.get("v1:k")
    assert disk_hit is not None and disk_hit.cache_tier == "disk" and disk_hit.text == "four"
    promoted = await fresh.get("v1:k")
    assert promoted is not None and promoted.cache_tier == "memory"
    stats = fresh.stats()
    assert (stats.memory.hits, stats.memory.misses) == (1, 1)
    assert (stats.disk.hits, stats.disk.misses) == (1, 0)
    assert (stats.hits, stats.misses, stats.hit_rate) == (2, 0, 1.0)
    fresh.close()


async def test_stores_a_length_stop_and_replays_it_flagged(tmp_path: Path) -> None:
    cache = make(tmp_path)
    flag = GuardWarning("length", "stopped", tokens_after=16)
    cut = LLMResponse(text="par", finish_reason="length", warnings=[flag])
    assert await cache.put("k", DET, cut)
    hit = await cache.get("k")
    assert hit is not None and hit.text == "par" and hit.finish_reason == "length" and hit.partial
    assert hit.warnings == [flag]  # the flag is part of the stored answer
    cache.close()
    fresh = make(tmp_path)  # a new process: the disk tier keeps the flag too
    from_disk = await fresh.get("k")
    assert from_disk is not None and from_disk.cache_tier == "disk" and from_disk.warnings == [flag]
    fresh.close()


async def test_damaged_stored_warnings_are_skipped(tmp_path: Path) -> None:
    cache = make(tmp_path)
    cache.close()
    store = DiskStore(tmp_path / "cache")
    junk: list[object] = ["cut", {"action": 3}, {"message": "?"}, {"action": "length", "tokens_after": "x"}]
    store.put("k", {"text": "par", "finish_reason": "length", "warnings": junk})
    store.close()
    fresh = make(tmp_path)
    hit = await fresh.get("k")
    assert hit is not None and hit.warnings == [GuardWarning("length", "")] and hit.partial
    fresh.close()


async def test_refuses_guarded_error_and_nondeterministic(tmp_path: Path) -> None:
    cache = make(tmp_path)
    cut = LLMResponse(text="par", finish_reason="length", warnings=[GuardWarning("shrink_output", "lowered")])
    guarded = LLMResponse(text="x", finish_reason="stop", warnings=[GuardWarning("truncate", "cut")])
    assert not await cache.put("k1", DET, cut)
    assert not await cache.put("k2", DET, guarded)
    assert not await cache.put("k3", DET, LLMResponse(text="", finish_reason="error"))
    hot = DET.replace(params={"temperature": 0.7})
    assert not await cache.put("k4", hot, answer())
    assert await cache.put("k5", DET.replace(params={"temperature": 0.7, "seed": 3}), answer())
    for key in ("k1", "k2", "k3", "k4"):
        assert await cache.get(key) is None
    assert cache.stats().refused == 4 and cache.stats().stores == 1
    cache.close()
    allowed = make(tmp_path, cache_nondeterministic=True)
    assert await allowed.put("k4", hot, answer())
    allowed.close()


async def test_ttl_expires_both_tiers(tmp_path: Path) -> None:
    clock = Clock()
    cache = make(tmp_path, clock, cache_ttl_s=60.0)
    await cache.put("k", DET, answer())
    clock.now += 30
    assert await cache.get("k") is not None
    cache.close()
    clock.now += 31
    later = make(tmp_path, clock, cache_ttl_s=60.0)
    assert await later.get("k") is None
    later.close()


async def test_clear_and_metrics(tmp_path: Path) -> None:
    cache = make(tmp_path)
    await cache.put("k", DET, answer())
    await cache.get("k")
    await cache.get("nope")
    text = cache._metrics.exposition().decode()  # type: ignore[union-attr]
    assert 'iterate_cache_requests_total{result="hit",tier="memory"} 1.0' in text
    assert 'iterate_cache_requests_total{result="miss",tier="memory"} 1.0' in text
    assert 'iterate_cache_requests_total{result="miss",tier="disk"} 1.0' in text
    cache.clear()
    assert await cache.get("k") is None
    cache.close()


async def test_disabled_cache_is_a_no_op_and_touches_no_disk(tmp_path: Path) -> None:
    cache = make(tmp_path, cache_enabled=False)
    assert not await cache.put("k", DET, answer())
    assert await cache.get("k") is None
    assert not (tmp_path / "cache").exists()
    assert cache.stats().misses == 0


def test_relative_cache_dir_resolves_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = ResponseCache(IterateConfig(cache_dir=".iterate_cache"))
    assert cache.folder == tmp_path / ".iterate_cache"
    cache.close()
