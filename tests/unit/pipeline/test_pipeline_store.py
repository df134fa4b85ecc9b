"""The SQLite artifact store: upsert idempotency, a real file, writes off the event loop."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from pytest_iterate.pipeline.store import ArtifactRecord, ArtifactStore


def record(request_id: str = "d1", **kw: object) -> ArtifactRecord:
    base: dict[str, object] = {
        "request": {"id": request_id, "title": "t"},
        "code": "x = 1",
        "language": "python",
        "valid": True,
        "cache_key": f"v1:{request_id}",
    }
    base.update(kw)
    return ArtifactRecord(request_id, **base)  # type: ignore[arg-type]


async def test_upsert_gives_no_duplicates_in_memory() -> None:
    store = ArtifactStore(":memory:")
    try:
        await store.put(record(run_id="r1"))
        await store.put(record(run_id="r2", code="x = 2"))
        await store.put(record("d2"))
        rows = await store.rows()
        assert [r["request_id"] for r in rows] == ["d1", "d2"]
        assert rows[0]["code"] == "x = 2" and rows[0]["run_id"] == "r2"
    finally:
        await store.aclose()


async def test_file_store_persists_fields_and_is_idempotent_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "artifacts.sqlite"
    bad = record(
        "d3",
        code="def f(:\n",
        valid=False,
        syntax_error_line=1,
        syntax_error="invalid syntax",
        warnings=[{"action": "no_code", "message": "m"}],
        timings=[{"name": "llm_call", "start_s": 1.0, "duration_s": 0.5, "ok": True}],
        cache_tier="memory",
    )
    for _ in range(2):
        store = ArtifactStore(path)
        await store.put_many([record("d1"), bad])
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0] == 2
    store = ArtifactStore(path)
    row = (await store.rows("d3"))[0]
    await store.aclose()
    assert row["valid"] is False and row["syntax_error_line"] == 1
    assert row["timings"][0]["name"] == "llm_call" and row["warnings"][0]["action"] == "no_code"
    assert row["request"] == {"id": "d3", "title": "t"} and row["cache_tier"] == "memory"


async def test_same_request_id_with_other_content_is_a_new_row() -> None:
    store = ArtifactStore(":memory:")
    await store.put(record("d1", cache_key=None))
    await store.put(record("d1", cache_key=None, request={"id": "d1", "title": "changed"}))
    await store.put(record("d1", cache_key=None, request={"id": "d1", "title": "changed"}))
    assert await store.count() == 2
    await store.aclose()


async def test_writes_run_on_the_writer_thread() -> None:
    store = ArtifactStore(":memory:")
    seen: list[str] = []
    await store._submit(lambda conn: seen.append(threading.current_thread().name))
    await store.aclose()
    assert seen and seen[0].startswith("iterate-store") and seen[0] != threading.current_thread().name


async def test_concurrent_puts_are_group_committed(tmp_path: Path) -> None:
    import asyncio

    store = ArtifactStore(tmp_path / "g.sqlite")
    await asyncio.gather(*(store.put(record(f"d{i}")) for i in range(50)))
    assert await store.count() == 50
    assert 1 <= store.commits < 50
    await store.aclose()


async def test_failed_commit_reaches_every_waiter(tmp_path: Path) -> None:
    import asyncio

    import pytest

    store = ArtifactStore(tmp_path / "f.sqlite")
    await store.put(record("d0"))
    await store._submit(lambda conn: conn.execute("DROP TABLE artifacts"))
    outcomes = await asyncio.gather(*(store.put(record(f"d{i}")) for i in range(3)), return_exceptions=True)
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.put(record("late"))
