"""The artifact store: one SQLite table of design artifacts.

Each row holds the request (JSON), the extracted code, its language, validity and
syntax error line, the stage timings (JSON), the warnings (JSON), the cache key and
the run id. Rows are keyed by ``(request_id, content_key)`` where ``content_key`` is
the request's cache key (or a sha256 of the request JSON when there is none), and
written with an upsert: running the pipeline twice on one store updates rows
instead of duplicating them.

The connection lives in one dedicated writer thread (a one-worker executor), so
every statement runs off the event loop and in order; ``":memory:"`` works because
the one thread owns the one connection. Concurrent :meth:`ArtifactStore.put` calls
are group-committed: rows queued while the writer is busy go in its next
transaction, and each ``put`` returns once its row is committed.

>>> import asyncio
>>> async def demo():
...     store = ArtifactStore(":memory:")
...     rec = ArtifactRecord("d1", {"id": "d1"}, code="x = 1", language="python", valid=True)
...     await store.put(rec); await store.put(rec)
...     n = await store.count(); await store.aclose(); return n
>>> asyncio.run(demo())
1
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ArtifactRecord", "ArtifactStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    content_key TEXT NOT NULL,
    run_id TEXT,
    request_json TEXT NOT NULL,
    language TEXT,
    code TEXT,
    valid INTEGER,
    syntax_error_line INTEGER,
    syntax_error TEXT,
    warnings_json TEXT NOT NULL DEFAULT '[]',
    timings_json TEXT NOT NULL DEFAULT '[]',
    cache_key TEXT,
    cache_tier TEXT,
    created_s REAL NOT NULL,
    updated_s REAL NOT NULL,
    UNIQUE (request_id, content_key)
)
"""
_UPSERT = """
INSERT INTO artifacts (request_id, content_key, run_id, request_json, language, code, valid,
    syntax_error_line, syntax_error, warnings_json, timings_json, cache_key, cache_tier, created_s, updated_s)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (request_id, content_key) DO UPDATE SET
    run_id = excluded.run_id, request_json = excluded.request_json, language = excluded.language,
    code = excluded.code, valid = excluded.valid, syntax_error_line = excluded.syntax_error_line,
    syntax_error = excluded.syntax_error, warnings_json = excluded.warnings_json,
    timings_json = excluded.timings_json, cache_key = excluded.cache_key, cache_tier = excluded.cache_tier,
    updated_s = excluded.updated_s
"""
_COLUMNS = (
    "request_id",
    "content_key",
    "run_id",
    "request_json",
    "language",
    "code",
    "valid",
    "syntax_error_line",
    "syntax_error",
    "warnings_json",
    "timings_json",
    "cache_key",
    "cache_tier",
    "created_s",
    "updated_s",
)


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """One row to write. ``request`` is the design request's JSON form."""

    request_id: str
    request: Mapping[str, Any]
    code: str | None = None
    language: str | None = None
    valid: bool | None = None
    syntax_error_line: int | None = None
    syntax_error: str | None = None
    warnings: Sequence[Mapping[str, Any]] = ()
    timings: Sequence[Mapping[str, Any]] = ()
    cache_key: str | None = None
    cache_tier: str | None = None
    run_id: str | None = None
    created_s: float = field(default_factory=time.time)

    def request_json(self) -> str:
        return json.dumps(self.request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def content_key(self) -> str:
        if self.cache_key:
            return self.cache_key
        return "sha256:" + hashlib.sha256(self.request_json().encode("utf-8")).hexdigest()

    def row(self) -> tuple[Any, ...]:
        return (
            self.request_id,
            self.content_key(),
            self.run_id,
            self.request_json(),
            self.language,
            self.code,
            None if self.valid is None else int(self.valid),
            self.syntax_error_line,
            self.syntax_error,
            json.dumps(list(self.warnings), separators=(",", ":")),
            json.dumps(list(self.timings), separators=(",", ":")),
            self.cache_key,
            self.cache_tier,
            self.created_s,
            self.created_s,
        )


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class ArtifactStore:
    """SQLite artifacts, written by one thread; ``path`` may be ``":memory:"``."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._executor = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="iterate-store")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._flush_scheduled = False
        self.commits = 0  # transactions of put() batches (group commit: <= number of puts)

    @classmethod
    def from_config(cls, config: Any) -> ArtifactStore:
        return cls(config.store_path)

    # -- running on the writer thread -------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError(f"the artifact store {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._connection()))

    # -- public API ---------------------------------------------------------------------
    async def put(self, record: ArtifactRecord) -> None:
        """Insert or update the row of ``(request_id, content_key)``; returns once committed."""
        if self._closed:
            raise RuntimeError(f"the artifact store {self.path} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._pending.append((record.row(), future))
            schedule = not self._flush_scheduled
            self._flush_scheduled = True
        if schedule:
            self._executor.submit(self._flush, loop)
        await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: commit every queued row in one transaction."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._flush_scheduled = False
        if not batch:
            return
        error: BaseException | None = None
        try:
            conn = self._connection()
            with conn:
                conn.execute("BEGIN")
                conn.executemany(_UPSERT, [row for row, _ in batch])
            self.commits += 1
        except BaseException as exc:  # handed to every waiter
            error = exc
        loop.call_soon_threadsafe(_settle, [f for _, f in batch], error)

    async def put_many(self, records: Sequence[ArtifactRecord]) -> None:
        rows = [r.row() for r in records]

        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(_UPSERT, rows)

        await self._submit(write)

    async def count(self) -> int:
        return int(await self._submit(lambda c: c.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0]))

    async def rows(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """Rows as dicts (JSON columns decoded, ``valid`` as bool or None), oldest first."""
        sql = f"SELECT {', '.join(_COLUMNS)} FROM artifacts"
        args: tuple[Any, ...] = ()
        if request_id is not None:
            sql += " WHERE request_id = ?"
            args = (request_id,)
        sql += " ORDER BY id"
        raw = await self._submit(lambda c: c.execute(sql, args).fetchall())
        out = []
        for values in raw:
            row = dict(zip(_COLUMNS, values, strict=True))
            row["valid"] = None if row["valid"] is None else bool(row["valid"])
            row["request"] = json.loads(row.pop("request_json"))
            row["warnings"] = json.loads(row.pop("warnings_json"))
            row["timings"] = json.loads(row.pop("timings_json"))
            out.append(row)
        return out

    def close(self) -> None:
        """Close the connection and stop the writer thread (idempotent)."""
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
