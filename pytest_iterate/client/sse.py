"""Incremental Server-Sent Events parsing for OpenAI-style streams.

Two layers, both fed raw byte chunks as they come off the wire (a chunk may end
anywhere: mid-line, mid-field, mid-UTF-8 sequence):

* :class:`SSEParser` knows only the SSE format: lines end with ``\\n``, ``\\r\\n`` or
  ``\\r``; ``field: value`` lines; ``:`` comments; ``data:`` lines accumulate (joined
  with ``\\n``) until a blank line ends the event. Lines are decoded as UTF-8 only once
  complete, so a multi-byte character split across chunks is never broken.
* :class:`StreamDecoder` knows the OpenAI conventions on top: each event's data is a
  JSON object, ``data: [DONE]`` ends the stream, and an ``event: error`` or a payload
  with an ``"error"`` key is a failure. It raises
  :class:`~pytest_iterate.client.errors.StreamError` for an error event, for data
  that is not a JSON object, and (from :meth:`StreamDecoder.close`) for a stream that
  ended before ``[DONE]``.

>>> d = StreamDecoder()
>>> d.feed(b'data: {"a": 1}\\n\\nda')
[{'a': 1}]
>>> d.feed(b'ta: [DONE]\\n\\n'), d.done
([], True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pytest_iterate.client.errors import StreamError

__all__ = ["SSEEvent", "SSEParser", "StreamDecoder"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type (``message`` unless an ``event:`` field set it) and data."""

    data: str
    event: str = "message"


class SSEParser:
    """The SSE wire format, fed incrementally. ``id`` and ``retry`` fields are ignored."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes; return the events completed by them (possibly none)."""
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        start = 0
        size = len(buf)
        while start < size:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, nl if nl >= 0 else size)
            if cr >= 0:
                if cr == size - 1:
                    break  # a \r at the very end: wait to see whether \n follows
                end, nxt = cr, cr + 2 if buf[cr + 1] == 0x0A else cr + 1
            elif nl >= 0:
                end, nxt = nl, nl + 1
            else:
                break
            self._line(buf[start:end], events)
            start = nxt
        self._buf = buf[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """End of the byte stream: flush a last line and a last event without a blank line."""
        events: list[SSEEvent] = []
        rest = self._buf
        self._buf = b""
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        if rest:
            self._line(rest, events)
        self._dispatch(events)
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            self._dispatch(events)
            return
        if raw[0] == 0x3A:  # ":" comment (keep-alive)
            return
        line = raw.decode("utf-8", errors="replace")
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value

    def _dispatch(self, events: list[SSEEvent]) -> None:
        if self._data:
            events.append(SSEEvent("\n".join(self._data), self._event or "message"))
        self._data = []
        self._event = ""


class StreamDecoder:
    """OpenAI streaming payloads from raw chunks; ``done`` turns true at ``[DONE]``.

    ``url`` and ``status`` only go into error messages.
    """

    __slots__ = ("_parser", "done", "status", "url")

    def __init__(self, *, url: str | None = None, status: int | None = None) -> None:
        self._parser = SSEParser()
        self.done = False
        self.url = url
        self.status = status

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """The JSON payloads completed by ``chunk``; raises StreamError on an error event."""
        if self.done:
            return []
        return self._payloads(self._parser.feed(chunk))

    def close(self) -> list[dict[str, Any]]:
        """The end of the body: the last payloads, or StreamError when ``[DONE]`` never came."""
        payloads = [] if self.done else self._payloads(self._parser.close())
        if not self.done:
            raise StreamError(
                f"{self.url or 'the endpoint'} ended the stream before [DONE]",
                url=self.url,
                status=self.status,
            )
        return payloads

    def _payloads(self, events: list[SSEEvent]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for ev in events:
            data = ev.data
            if data == "[DONE]":
                self.done = True
                break
            try:
                payload = json.loads(data)
            except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
                if ev.event == "error":
                    self._fail(data)
                raise StreamError(
                    f"{self.url or 'the endpoint'} sent a stream event that is not JSON: {data[:80]!r}",
                    url=self.url,
                    status=self.status,
                    body=data.encode(),
                ) from None
            if ev.event == "error" or (isinstance(payload, dict) and "error" in payload):
                self._fail(payload)
            if not isinstance(payload, dict):
                raise StreamError(
                    f"{self.url or 'the endpoint'} sent a stream event that is not a JSON object",
                    url=self.url,
                    status=self.status,
                    body=data.encode(),
                )
            out.append(payload)
        return out

    def _fail(self, payload: Any) -> None:
        err = payload.get("error", payload) if isinstance(payload, dict) else payload
        try:
            if isinstance(err, dict):
                detail = str(err.get("message") or err.get("code") or err.get("type") or err)
            else:
                detail = str(err)
            body = json.dumps(payload, default=str).encode()
        except (ValueError, RecursionError):  # a value nested too deep to show
            detail, body = "(an error value that cannot be shown)", b""
        raise StreamError(
            f"{self.url or 'the endpoint'} sent an error inside the stream: {detail[:200]}",
            url=self.url,
            status=self.status,
            body=body,
        )
