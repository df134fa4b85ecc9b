"""The cassette file format: plain JSONL, one recorded interaction per line.

Each line is one JSON object written with sorted keys, so a cassette reads well in a
diff::

    {"key": "v1:…", "recorded_at": "2026-11-28T14:00:00Z", "version": 1,
     "request": {"body": {...}, "method": "POST", "path": "/v1/chat/completions"},
     "response": {"status": 200, "headers": {"content-type": "..."},
                  "body": "..."            # a whole body, or
                  "chunks": ["data: ...", ...],   # the raw stream, chunk by chunk
                  "timing": {"ttft_s": 0.21, "gaps_s": [0.02, ...], "total_s": 0.9}}}

``key`` is the body-aware cache key the transport matches on. Timings count from the
send: ``ttft_s`` to the first chunk (to the whole body when not streamed), ``gaps_s``
between consecutive chunks, ``total_s`` to the end of the body.

Secrets never reach the file: response headers pass an allow-list
(:data:`ALLOWED_HEADERS` and the ``x-ratelimit-`` / ``retry-after`` families), request
headers are not stored at all, and every string is scrubbed of the secret values the
transport saw (:func:`scrub`). Lines starting with ``#`` and blank lines are ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_iterate._files import write_atomic
from pytest_iterate.client.errors import CassetteError

__all__ = [
    "ALLOWED_HEADERS",
    "FORMAT_VERSION",
    "MIN_SECRET_LENGTH",
    "Interaction",
    "Timing",
    "filter_headers",
    "read_cassette",
    "scrub",
    "write_cassette",
]

FORMAT_VERSION = 1
#: Response headers kept verbatim (lower-case); plus every ``x-ratelimit-*`` and ``retry-after*``.
ALLOWED_HEADERS = frozenset({"content-type", "retry-after", "retry-after-ms"})
_ALLOWED_PREFIXES = ("x-ratelimit-", "retry-after")
#: Secret values shorter than this are not scrubbed from text (they would mangle it).
MIN_SECRET_LENGTH = 6
_MASK = "***"


@dataclass(frozen=True, slots=True)
class Timing:
    """When the answer arrived, in seconds from the send."""

    ttft_s: float
    gaps_s: tuple[float, ...] = ()
    total_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ttft_s": round(self.ttft_s, 6),
            "gaps_s": [round(g, 6) for g in self.gaps_s],
            "total_s": round(self.total_s, 6),
        }


@dataclass(frozen=True, slots=True)
class Interaction:
    """One request and its recorded answer.

    Exactly one of ``body`` (a whole answer) and ``chunks`` (a streamed one) is set.
    """

    key: str
    method: str
    path: str
    request_body: Any
    status: int
    headers: Mapping[str, str]
    timing: Timing
    body: str | None = None
    chunks: tuple[str, ...] | None = None
    recorded_at: str = ""
    version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def streamed(self) -> bool:
        return self.chunks is not None

    def to_json(self) -> dict[str, Any]:
        response: dict[str, Any] = {
            "status": self.status,
            "headers": dict(self.headers),
            "timing": self.timing.to_json(),
        }
        if self.chunks is not None:
            response["chunks"] = list(self.chunks)
        else:
            response["body"] = self.body or ""
        return {
            **self.extra,
            "key": self.key,
            "request": {"method": self.method, "path": self.path, "body": self.request_body},
            "response": response,
            "recorded_at": self.recorded_at,
            "version": self.version,
        }

    def to_line(self) -> str:
        """One JSON line (no newline), keys sorted."""
        return json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, doc: Any) -> Interaction:
        """Parse one decoded line; raises ``ValueError`` naming what is wrong."""
        if not isinstance(doc, dict):
            raise ValueError("the line is not a JSON object")
        known = {"key", "request", "response", "recorded_at", "version"}
        missing = sorted({"key", "request", "response"} - doc.keys())
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        version = doc.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version!r} is not {FORMAT_VERSION}")
        key, req, resp = doc["key"], doc["request"], doc["response"]
        if not isinstance(key, str) or not key:
            raise ValueError("'key' is not a non-empty string")
        if not isinstance(req, dict) or not isinstance(resp, dict):
            raise ValueError("'request' and 'response' must be objects")
        status = resp.get("status")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"response status {status!r} is not an HTTP status")
        headers = resp.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("response headers must map strings to strings")
        chunks = resp.get("chunks")
        body = resp.get("body")
        if (chunks is None) == (body is None):
            raise ValueError("a response needs exactly one of 'body' and 'chunks'")
        if chunks is not None and (
            not isinstance(chunks, list) or not all(isinstance(c, str) for c in chunks)
        ):
            raise ValueError("'chunks' must be a list of strings")
        if body is not None and not isinstance(body, str):
            raise ValueError("'body' must be a string")
        timing = _timing(resp.get("timing"), len(chunks) if chunks is not None else 0)
        return cls(
            key=key,
            method=str(req.get("method", "POST")),
            path=str(req.get("path", "")),
            request_body=req.get("body"),
            status=status,
            headers=headers,
            timing=timing,
            body=body,
            chunks=tuple(chunks) if chunks is not None else None,
            recorded_at=str(doc.get("recorded_at", "")),
            version=version,
            extra={k: v for k, v in doc.items() if k not in known},
        )


def _timing(doc: Any, n_chunks: int) -> Timing:
    if doc is None:
        return Timing(0.0)
    if not isinstance(doc, dict):
        raise ValueError("'timing' must be an object")
    try:
        ttft = float(doc.get("ttft_s", 0.0))
        gaps = tuple(float(g) for g in doc.get("gaps_s", ()))
        total = float(doc.get("total_s", ttft))
    except (TypeError, ValueError):
        raise ValueError("timing values must be numbers") from None
    if ttft < 0 or total < 0 or any(g < 0 for g in gaps):
        raise ValueError("timing values must not be negative")
    if n_chunks and len(gaps) not in (0, n_chunks - 1):
        raise ValueError(f"{len(gaps)} gaps for {n_chunks} chunks (expected {n_chunks - 1})")
    return Timing(ttft, gaps, total)


def read_cassette(path: str | os.PathLike[str]) -> list[Interaction]:
    """All interactions of a cassette, in file order.

    Raises :class:`CassetteError` naming the file and the 1-based line number of the
    first line that is not a valid interaction, and when the file cannot be read.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CassetteError(f"cassette {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CassetteError(f"cassette {p} cannot be read: {exc}") from exc
    out: list[Interaction] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            doc = json.loads(stripped)
        except ValueError as exc:
            raise CassetteError(f"{p}:{lineno}: damaged cassette line, not JSON ({exc})") from None
        try:
            out.append(Interaction.from_json(doc))
        except ValueError as exc:
            raise CassetteError(f"{p}:{lineno}: damaged cassette line: {exc}") from None
    return out


def write_cassette(path: str | os.PathLike[str], interactions: Iterable[Interaction]) -> None:
    """Write ``interactions`` to ``path`` atomically (a temp file, then a rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, "".join(i.to_line() + "\n" for i in interactions))


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every occurrence of a secret replaced by ``***``, recursively.

    Secrets shorter than :data:`MIN_SECRET_LENGTH` are ignored (replacing a one-letter
    "key" everywhere would destroy the recording; such a key is no secret anyway).
    """
    live = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    if not live:
        return value
    return _scrub(value, sorted(set(live), key=len, reverse=True))


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for s in secrets:
            if s in value:
                value = value.replace(s, _MASK)
        return value
    if isinstance(value, Mapping):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    return value


def filter_headers(headers: Mapping[str, str], secrets: Sequence[str] = ()) -> dict[str, str]:
    """The response headers a cassette may keep: the allow-list, minus any holding a secret."""
    live = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    kept: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low not in ALLOWED_HEADERS and not low.startswith(_ALLOWED_PREFIXES):
            continue
        if any(s in value for s in live):
            continue
        kept[low] = value
    return dict(sorted(kept.items()))
