"""The disk tier: a diskcache folder holding JSON text, safe across processes.

diskcache keeps its index in SQLite (WAL mode), so several processes (pytest-xdist
workers, a benchmark next to a test run) can read and write one folder at once.
Values are stored as JSON text, never pickled: :class:`_JsonOnlyDisk` refuses to
unpickle anything it finds, so a foreign or damaged entry cannot run code. Every
failure to read (garbage in a value, a damaged SQLite file, a locked or missing
folder) is logged as a warning and reads as a miss; a damaged entry is removed.
A folder that cannot be written (a read-only checkout, a CI cache restored read-only)
still serves its entries: the database is read through SQLite's read-only, immutable
mode, and nothing is stored.

TTL: the expiry time (wall clock, injectable) is stored in the entry and checked on
read; diskcache's own ``expire=`` is set as well so expired rows get culled.

Calls are synchronous: one read of a small entry takes tens of microseconds (see
``benchmarks/bench_cache.py``), so :class:`~pytest_iterate.cache.tiered.ResponseCache`
reads on the event loop and moves writes (an SQLite commit) to its writer thread, several
entries per transaction (:meth:`DiskStore.put_many`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import diskcache

__all__ = ["DiskStore"]

log = logging.getLogger("pytest_iterate.cache")

_ENTRY_VERSION = 1


def _json_only_disk() -> type[Any]:

    class _JsonOnlyDisk(diskcache.Disk):  # type: ignore[misc]
        """A diskcache Disk that never unpickles: a pickled value or key is an error."""

        def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
            if mode == diskcache.core.MODE_PICKLE:
                raise ValueError("refusing a pickled cache value (this cache stores JSON only)")
            return super().fetch(mode, filename, value, read)

        def get(self, key: Any, raw: bool) -> Any:
            if not raw:
                raise ValueError("refusing a pickled cache key (this cache stores JSON only)")
            return super().get(key, raw)

    return _JsonOnlyDisk


class _ReadOnlyCache:
    """The entries of a diskcache folder that cannot be written: diskcache itself needs to
    write when it opens (its schema, its WAL), so a read-only folder is read directly with
    SQLite's ``mode=ro&immutable=1``, and the values decoded by the same JSON-only Disk."""

    def __init__(self, folder: Path) -> None:

        db = folder / diskcache.core.DBNAME
        if not db.is_file():
            raise FileNotFoundError(f"no {diskcache.core.DBNAME} in {folder}")
        self._db = sqlite3.connect(f"{db.as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        try:
            self._db.execute("SELECT COUNT(*) FROM Cache").fetchone()  # a damaged file fails here
        except sqlite3.Error:
            self._db.close()
            raise
        self._disk = _json_only_disk()(str(folder))

    def get(self, key: str, default: Any = None) -> Any:
        row = self._db.execute(
            "SELECT mode, filename, value, expire_time FROM Cache WHERE key = ? AND raw = 1", (key,)
        ).fetchone()
        if row is None or (row[3] is not None and row[3] <= time.time()):
            return default
        return self._disk.fetch(row[0], row[1], row[2], False)

    def set(self, key: str, value: Any, expire: float | None = None) -> bool:
        raise sqlite3.OperationalError("the disk cache folder is read-only")

    def delete(self, key: str) -> bool:
        return False

    def clear(self) -> int:
        return 0

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM Cache").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class DiskStore:
    """JSON entries in a diskcache folder, opened on first use.

    If the folder cannot be opened at all (a damaged database file), the store logs
    one warning and acts as an empty, read-only-nothing tier for the rest of its life.
    """

    def __init__(self, folder: str | Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self._wall_clock = wall_clock
        self._cache: Any = None
        self._broken = False
        self.read_only = False

    # -- opening --------------------------------------------------------------
    def _open(self) -> Any:
        if self._cache is not None or self._broken:
            return self._cache

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(self.folder), disk=_json_only_disk(), timeout=5)
        except (sqlite3.Error, OSError) as exc:
            try:
                self._cache = _ReadOnlyCache(self.folder)
            except (sqlite3.Error, OSError):
                self._broken = True
                log.warning("disk cache at %s cannot be opened, disk tier disabled: %s", self.folder, exc)
            else:
                self.read_only = True
                log.warning(
                    "disk cache at %s cannot be written (%s): serving its entries, storing none",
                    self.folder,
                    exc,
                )
        return self._cache

    @property
    def usable(self) -> bool:
        return self._open() is not None

    # -- entries --------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        """The stored payload for ``key``, or None (missing, expired, damaged, unreadable)."""
        cache = self._open()
        if cache is None:
            return None
        try:
            raw = cache.get(key, default=None)
        except (sqlite3.Error, OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("disk cache read failed for %s, treated as a miss: %s", key, exc)
            self._discard(key)
            return None
        if raw is None:
            return None
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            entry = json.loads(text)
            if not isinstance(entry, dict) or entry.get("v") != _ENTRY_VERSION:
                raise ValueError("not a cache entry of this version")
            payload = entry["payload"]
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
            expires_at = entry.get("expires_at")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("disk cache entry %s is damaged, treated as a miss: %s", key, exc)
            self._discard(key)
            return None
        if expires_at is not None and self._wall_clock() >= float(expires_at):
            self._discard(key)
            return None
        return payload

    def put(self, key: str, payload: dict[str, Any], ttl_s: float | None = None) -> bool:
        """Store ``payload`` (plain JSON types) under ``key``; False if the store failed."""
        return self.put_many({key: (payload, self._wall_clock())}, ttl_s) == 1

    def put_many(
        self, entries: Mapping[str, tuple[dict[str, Any], float]], ttl_s: float | None = None
    ) -> int:
        """Store each ``key: (payload, stored_at)`` in one transaction (one commit); a TTL counts
        from ``stored_at`` (wall clock), when the answer was stored, not when it reached the disk.
        Returns the number stored (0 when the write failed: logged, nothing half-written)."""
        cache = self._open()
        if cache is None or self.read_only or not entries:
            return 0
        texts = {
            key: json.dumps(
                {
                    "v": _ENTRY_VERSION,
                    "expires_at": None if ttl_s is None else stored_at + ttl_s,
                    "payload": payload,
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
            for key, (payload, stored_at) in entries.items()
        }
        try:
            with cache.transact():
                for key, text in texts.items():
                    cache.set(key, text, expire=ttl_s)
        except (sqlite3.Error, OSError) as exc:
            first = next(iter(texts))
            log.warning("disk cache write of %d entries failed (%s, ...): %s", len(texts), first, exc)
            return 0
        return len(texts)

    def delete(self, key: str) -> None:
        self._discard(key)

    def clear(self) -> None:
        cache = self._open()
        if cache is None:
            return
        try:
            cache.clear()
        except (sqlite3.Error, OSError) as exc:
            log.warning("disk cache clear failed at %s: %s", self.folder, exc)

    def __len__(self) -> int:
        cache = self._open()
        try:
            return 0 if cache is None else len(cache)
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def _discard(self, key: str) -> None:
        try:
            if self._cache is not None:
                self._cache.delete(key)
        except (sqlite3.Error, OSError) as exc:
            log.debug("could not delete damaged disk cache entry %s: %s", key, exc)
