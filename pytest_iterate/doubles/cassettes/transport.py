"""A :class:`~pytest_iterate.client.transport.base.Transport` that records and replays.

Requests are matched on the body-aware cache key
(:func:`pytest_iterate.cache.keys.cache_key_from_body`) of the JSON body, with
the URL *path* as the base (``/v1/chat/completions``): a cassette recorded against
``127.0.0.1:8765`` replays against any host. ``match_host=True`` puts scheme, host and
port in the key too.

Record modes, as in vcrpy:

``none``  replay only; a request with no recording is a :class:`CassetteError` that
          names the key and the cassette. Never touches the network.
``once``  record when the cassette file does not exist yet, else behave as ``none``.
``new``   replay what is recorded, record what is not (appended to the file).
``all``   always call the endpoint and record; the file is rewritten with this run's
          interactions only.

A key recorded several times is replayed in recorded order, the last one repeating.
``stream`` is not in the key, so a request matches only recordings of its own shape
(streamed or whole): a cassette may hold both for one key.
With ``replay_timing=True`` a replayed answer keeps its recorded shape: a streamed
answer waits ``ttft_s`` before the first chunk, each gap between chunks, and the rest
of ``total_s`` before it ends; a whole body arrives after ``total_s``. ``sleep`` is
injected so tests can check the waits without waiting.

Only complete answers are recorded (a stream that breaks is not). Secrets never reach
the file: the values of ``Authorization`` / ``api-key`` / ``x-api-key`` / ``cookie``
request headers, the ``auth`` the client sends, plus any ``secrets`` given, are
scrubbed from every string, and
response headers pass an allow-list (see :mod:`.format`).
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pytest_iterate.client.errors import CassetteError, ConfigError
from pytest_iterate.doubles.cassettes.format import (
    Interaction,
    Timing,
    filter_headers,
    read_cassette,
    scrub,
    write_cassette,
)

if TYPE_CHECKING:
    from pytest_iterate.client.secret import Secret
    from pytest_iterate.client.transport.base import Transport, TransportResponse

__all__ = ["RECORD_MODES", "CassetteTransport", "RecordMode", "ReplayResponse"]

RecordMode = Literal["none", "once", "new", "all"]
RECORD_MODES: tuple[str, ...] = ("none", "once", "new", "all")
_SECRET_HEADERS = ("authorization", "api-key", "x-api-key", "cookie", "proxy-authorization")

Sleep = Callable[[float], Awaitable[Any]]


def _header_secrets(headers: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS and value:
            found.append(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                found.append(token.strip())
    return found


class _Headers(Mapping[str, str]):
    """A small case-insensitive, read-only header mapping."""

    __slots__ = ("_d",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._d = {k.lower(): v for k, v in items.items()}

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def __iter__(self) -> Any:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


class ReplayResponse:
    """A recorded answer played back as a :class:`TransportResponse`."""

    __slots__ = ("_it", "_sleep", "_timed", "headers", "status")

    def __init__(self, interaction: Interaction, *, timed: bool, sleep: Sleep) -> None:
        self.status = interaction.status
        self.headers: Mapping[str, str] = _Headers(interaction.headers)
        self._it = interaction
        self._timed = timed
        self._sleep = sleep

    async def read(self) -> bytes:
        it = self._it
        if self._timed and it.timing.total_s > 0:
            await self._sleep(it.timing.total_s)
        if it.chunks is not None:
            return "".join(it.chunks).encode("utf-8")
        return (it.body or "").encode("utf-8")

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        it = self._it
        chunks = it.chunks if it.chunks is not None else ((it.body,) if it.body else ())
        timing = it.timing
        gaps = timing.gaps_s if len(timing.gaps_s) == max(len(chunks) - 1, 0) else ()
        elapsed = 0.0
        for i, chunk in enumerate(chunks):
            if self._timed:
                wait = timing.ttft_s if i == 0 else (gaps[i - 1] if gaps else 0.0)
                if wait > 0:
                    await self._sleep(wait)
                    elapsed += wait
            yield chunk.encode("utf-8")
        if self._timed and timing.total_s - elapsed > 1e-6:
            await self._sleep(timing.total_s - elapsed)

    async def aclose(self) -> None:
        return None


class _RecordingResponse:
    """Passes the inner answer through and records it once it has been read whole.

    A stream counts as whole when it ends, or when the reader stops after the SSE
    terminator ``data: [DONE]`` and closes the response (the client does that). A
    stream that breaks, or one abandoned before its end, is not recorded.
    """

    __slots__ = (
        "_clock",
        "_decoder",
        "_done",
        "_inner",
        "_state",
        "_t0",
        "_texts",
        "_times",
        "headers",
        "status",
    )

    def __init__(
        self,
        inner: TransportResponse,
        t0: float,
        clock: Callable[[], float],
        done: Callable[[str | None, list[str] | None, Timing, Mapping[str, str]], None],
    ) -> None:
        self.status = inner.status
        self.headers = inner.headers
        self._inner = inner
        self._t0 = t0
        self._clock = clock
        self._done = done
        self._texts: list[str] = []
        self._times: list[float] = []
        self._state = "idle"  # idle | streaming | failed | recorded
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def read(self) -> bytes:
        raw = await self._inner.read()
        total = self._clock() - self._t0
        if self._state == "idle":
            self._state = "recorded"
            self._done(raw.decode("utf-8", errors="replace"), None, Timing(total, (), total), self.headers)
        return raw

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        self._state = "streaming"
        clock, t0 = self._clock, self._t0
        try:
            async for raw in self._inner.iter_chunks():
                now = clock() - t0
                text = self._decoder.decode(raw)
                if text:
                    self._texts.append(text)
                    self._times.append(now)
                yield raw
        except Exception:
            self._state = "failed"
            raise
        self._finish()

    def _finish(self) -> None:
        if self._state != "streaming":
            return
        self._state = "recorded"
        end = self._clock() - self._t0
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._texts.append(tail)
            self._times.append(end)
        times = self._times
        ttft = times[0] if times else end
        gaps = tuple(b - a for a, b in itertools.pairwise(times))
        self._done(None, list(self._texts), Timing(ttft, gaps, max(end, ttft)), self.headers)

    def _saw_done(self) -> bool:
        tail = "".join(self._texts[-3:])
        return "data: [DONE]" in tail or "data:[DONE]" in tail

    async def aclose(self) -> None:
        if self._state == "streaming" and self._saw_done():
            self._finish()
        await self._inner.aclose()


class CassetteTransport:
    """Record and replay LLM calls in a JSONL cassette (see the module docstring).

    ``inner`` is the real transport used to record; when it is None and the mode may
    record, an :class:`~pytest_iterate.client.transport.aiohttp_transport.AiohttpTransport`
    is made on first use. ``secrets`` are extra values to scrub (the API key, say).
    """

    def __init__(
        self,
        inner: Transport | None,
        path: str | Path,
        mode: RecordMode | str = "none",
        *,
        replay_timing: bool = False,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        secrets: Iterable[str] = (),
        match_host: bool = False,
    ) -> None:
        if mode not in RECORD_MODES:
            raise ConfigError(
                f"{mode!r} is not a valid cassette record mode. Valid modes: {', '.join(RECORD_MODES)}"
            )
        self.path = Path(path)
        self.mode: str = mode
        self.replay_timing = replay_timing
        self.match_host = match_host
        self._inner = inner
        self._owns_inner = inner is None
        self._sleep = sleep
        self._clock = clock
        self._secrets = [s for s in secrets if s]
        exists = self.path.exists()
        if mode == "none" and not exists:
            raise CassetteError(
                f"cassette {self.path} does not exist (record mode 'none' only replays; "
                "record it with mode 'once', 'new' or 'all')"
            )
        self.can_record = mode in ("new", "all") or (mode == "once" and not exists)
        self.can_replay = mode != "all"
        self._recorded: list[Interaction] = read_cassette(self.path) if exists and mode != "all" else []
        self._by_key: dict[str, list[Interaction]] = {}
        for it in self._recorded:
            self._by_key.setdefault(it.key, []).append(it)
        self._played: dict[tuple[str, bool], int] = {}
        self._new = 0
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"CassetteTransport(path={str(self.path)!r}, mode={self.mode!r})"

    @property
    def interactions(self) -> list[Interaction]:
        """What the cassette holds now (recorded ones included)."""
        return list(self._recorded)

    @property
    def recorded_count(self) -> int:
        """Interactions recorded by this transport so far."""
        return self._new

    def key_for(self, method: str, url: str, json_body: Any | None) -> str:
        """The matching key of a request (what the cassette line's ``key`` holds)."""
        from pytest_iterate.cache.keys import cache_key_from_body

        body = _decode_body(json_body)
        parts = urlsplit(url)
        base = url.split("?", 1)[0] if self.match_host else parts.path
        keyed = body if isinstance(body, dict) else {"_body": body}
        if method.upper() != "POST":
            keyed = {**keyed, "_method": method.upper()}
        return cache_key_from_body(base, keyed)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json_body: Any | None,
        timeout_s: float,
        auth: Secret | None = None,
    ) -> TransportResponse:
        key = self.key_for(method, url, json_body)
        if self.can_replay:
            found = self._next(key, _wants_stream(json_body))
            if found is not None:
                self.hits += 1
                return ReplayResponse(found, timed=self.replay_timing, sleep=self._sleep)
        self.misses += 1
        if not self.can_record:
            raise CassetteError(
                f"no recorded interaction for key {key} ({method} {urlsplit(url).path}) in "
                f"cassette {self.path} (record mode {self.mode!r}; record with mode 'new' or 'all')"
            )
        inner = self._inner_transport()
        t0 = self._clock()
        resp = await inner.send(
            method, url, headers=headers, json_body=json_body, timeout_s=timeout_s, auth=auth
        )
        secrets = [*self._secrets, *_header_secrets(headers)]
        if auth is not None:
            secrets += _header_secrets({"authorization": auth.reveal()})
        path = urlsplit(url).path
        body = _decode_body(json_body)

        def done(
            text: str | None, chunks: list[str] | None, timing: Timing, rheaders: Mapping[str, str]
        ) -> None:
            interaction = Interaction(
                key=key,
                method=method.upper(),
                path=path,
                request_body=scrub(body, secrets),
                status=resp.status,
                headers=filter_headers(rheaders, secrets),
                timing=timing,
                body=scrub(text, secrets) if text is not None else None,
                chunks=tuple(scrub(chunks, secrets)) if chunks is not None else None,
                recorded_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            self._store(interaction)

        return _RecordingResponse(resp, t0, self._clock, done)

    async def aclose(self) -> None:
        """Close the inner transport when this transport made it."""
        if self._inner is not None and self._owns_inner:
            await self._inner.aclose()

    # -- internals -----------------------------------------------------------------------
    def _next(self, key: str, streamed: bool) -> Interaction | None:
        # ``stream`` is not part of the cache key (same answer either way), but a
        # streamed recording cannot answer a plain request: match the shape too.
        found = [it for it in self._by_key.get(key, ()) if it.streamed == streamed]
        if not found:
            return None
        slot = (key, streamed)
        n = self._played.get(slot, 0)
        self._played[slot] = n + 1
        return found[min(n, len(found) - 1)]

    def _inner_transport(self) -> Transport:
        if self._inner is None:
            from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport

            self._inner = AiohttpTransport()
        return self._inner

    def _store(self, interaction: Interaction) -> None:
        self._recorded.append(interaction)
        self._new += 1
        write_cassette(self.path, self._recorded)


def _wants_stream(json_body: Any | None) -> bool:
    body = _decode_body(json_body)
    return isinstance(body, dict) and bool(body.get("stream"))


def _decode_body(json_body: Any | None) -> Any:
    """The request body as JSON values (the client hands in pre-encoded bytes)."""
    if isinstance(json_body, (bytes, bytearray)):
        try:
            return json.loads(json_body)
        except ValueError:
            return bytes(json_body).decode("utf-8", errors="replace")
    return json_body
