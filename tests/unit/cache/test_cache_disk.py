"""The disk tier: two processes on one folder, damaged entries and files, no pickle."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sqlite3
from pathlib import Path

import diskcache
import pytest

from pytest_iterate.cache.disk import DiskStore

N_PER_WORKER = 150


def _worker(folder: str, name: str, other: str, barrier: object) -> dict[str, int]:
    store = DiskStore(folder)
    store.put("warmup-" + name, {"text": "w"})
    barrier.wait()  # type: ignore[attr-defined]
    seen_other = 0
    for i in range(N_PER_WORKER):
        assert store.put(f"{name}-{i}", {"text": f"{name} answer {i}", "chunks": [name, str(i)] * 20})
        value = store.get(f"{name}-{i // 2}")
        assert value is not None and value["text"] == f"{name} answer {i // 2}"
        theirs = store.get(f"{other}-{i}")
        if theirs is not None:
            assert theirs["text"] == f"{other} answer {i}", theirs
            seen_other += 1
    store.close()
    return {"seen_other": seen_other}


def test_two_processes_write_and_read_one_folder_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    folder = str(tmp_path / "shared")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            runs = [
                pool.apply_async(_worker, (folder, "a", "b", barrier)),
                pool.apply_async(_worker, (folder, "b", "a", barrier)),
            ]
            results = [r.get(timeout=60) for r in runs]
    assert all(isinstance(r["seen_other"], int) for r in results)
    store = DiskStore(folder)
    assert len(store) == 2 * N_PER_WORKER + 2
    for name in ("a", "b"):
        for i in range(N_PER_WORKER):
            value = store.get(f"{name}-{i}")
            assert value == {"text": f"{name} answer {i}", "chunks": [name, str(i)] * 20}
    store.close()


def test_garbage_value_reads_as_miss_and_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DiskStore(tmp_path)
    store.put("good", {"text": "ok"})
    raw = diskcache.Cache(str(tmp_path))
    raw.set("bad-json", "{not json")
    raw.set("wrong-shape", json.dumps({"v": 99, "payload": {}}))
    raw.set("bytes", b"\xff\xfe garbage")
    raw.close()
    # damage a stored row in place, the way a torn write or a bad sector would
    db = sqlite3.connect(tmp_path / "cache.db")
    db.execute("UPDATE Cache SET value = ? WHERE key = ?", ('{"v":1,"payload":[1,2', "good"))
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING, logger="pytest_iterate.cache"):
        for key in ("bad-json", "wrong-shape", "bytes", "good"):
            assert store.get(key) is None
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4
    assert store.get("bad-json") is None  # the damaged entry was removed
    assert store.put("good", {"text": "again"}) and store.get("good") == {"text": "again"}
    store.close()


def test_pickled_entry_is_never_unpickled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("UNPICKLED",))

    raw = diskcache.Cache(str(tmp_path))
    raw.set("evil", Boom())
    raw.close()
    store = DiskStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pytest_iterate.cache"):
        assert store.get("evil") is None
    assert any("pickled" in r.getMessage() for r in caplog.records)
    store.close()


def test_damaged_sqlite_file_is_a_miss_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DiskStore(tmp_path)
    store.put("k", {"text": "ok"})
    store.close()
    for name in ("cache.db-wal", "cache.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "cache.db").write_bytes(b"this is not an sqlite database" * 100)
    damaged = DiskStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pytest_iterate.cache"):
        assert damaged.get("k") is None
        assert damaged.put("k", {"text": "x"}) is False
        assert damaged.get("k") is None
    assert any("cannot be opened" in r.getMessage() for r in caplog.records)
    damaged.close()


def test_ttl_on_disk_uses_the_injected_wall_clock(tmp_path: Path) -> None:
    now = [5_000.0]
    store = DiskStore(tmp_path, wall_clock=lambda: now[0])
    store.put("k", {"text": "ok"}, ttl_s=100)
    now[0] += 99
    assert store.get("k") == {"text": "ok"}
    now[0] += 2
    assert store.get("k") is None
    store.close()


def _write_entry(folder: Path, key: str, payload: object) -> None:
    raw = diskcache.Cache(str(folder))
    raw.set(key, json.dumps({"v": 1, "expires_at": None, "payload": payload}))
    raw.close()


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"text": 5},
        {"text": "ok", "usage": "lots"},
        {"text": "ok", "chunks": [1, 2]},
        {"text": "ok", "chunk_times_s": [float("nan")]},
    ],
    ids=["empty", "text-not-a-string", "usage-not-counts", "chunks-not-strings", "nan-times"],
)
async def test_an_entry_of_the_wrong_shape_is_a_miss_removed_and_counted(
    tmp_path: Path, payload: object
) -> None:
    from pytest_iterate.cache.tiered import ResponseCache
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.metrics import IterateMetrics

    _write_entry(tmp_path, "k", payload)
    metrics = IterateMetrics()
    cache = ResponseCache(IterateConfig(cache_dir=str(tmp_path)), metrics)
    assert await cache.get("k") is None
    assert await cache.get("k") is None  # removed: the second look is a plain miss, not a second count
    assert cache.stats().corrupt == 1 and cache.stats().hits == 0
    assert "iterate_cache_corrupt_total 1.0" in metrics.exposition().decode()
    cache.close()
    assert DiskStore(tmp_path).get("k") is None


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i: not writable even by root (the tests may run as root, which ignores chmod)."""
    import subprocess

    flag = "+i" if on else "-i"
    targets = [str(p) for p in (path, *path.iterdir())]
    return subprocess.run(["chattr", flag, *targets], capture_output=True).returncode == 0


async def test_a_read_only_cache_folder_still_serves_hits(tmp_path: Path) -> None:
    from pytest_iterate.cache.tiered import ResponseCache
    from pytest_iterate.client.config import IterateConfig
    from pytest_iterate.client.types import LLMRequest, LLMResponse

    folder = tmp_path / "cache"
    config = IterateConfig(cache_dir=str(folder))
    request = LLMRequest(messages=({"role": "user", "content": "hi"},), params={"temperature": 0})
    writer = DiskStore(folder)  # written and closed on this thread: no connection left open
    assert writer.put("k", {"text": "stored answer", "finish_reason": "stop"})
    writer.close()
    assert sorted(p.name for p in folder.iterdir()) == ["cache.db"]
    if not _immutable(folder, True):
        pytest.skip("chattr +i is not available here: cannot make a folder read-only for root")
    try:
        reader = ResponseCache(config)
        hit = await reader.get("k")
        assert hit is not None and hit.text == "stored answer" and hit.cache_tier == "disk"
        assert await reader.put("k2", request, LLMResponse(text="new", finish_reason="stop"))
        assert await reader.get("k2") is not None  # the memory tier holds it; the disk stored nothing
        reader.close()
    finally:
        _immutable(folder, False)
    assert DiskStore(folder).get("k2") is None


def test_a_folder_diskcache_cannot_open_for_writing_is_read_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DiskStore(tmp_path)
    store.put("k", {"text": "kept"})
    store.close()

    def refuse(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(diskcache, "Cache", refuse)
    ro = DiskStore(tmp_path)
    assert ro.get("k") == {"text": "kept"} and ro.read_only
    assert ro.put("k2", {"text": "x"}) is False and ro.get("k2") is None
    ro.close()
