"""The OpenAI wire protocol: request bytes in, answers out, nothing about sockets.

What one HTTP attempt of :class:`~pytest_iterate.client.client.LLMClient` sends and
how it reads what comes back, as plain functions and two small classes the client
composes (and tests drive directly, with no server):

    encode_body(request, model)     the JSON body, as bytes
    new_request_id()                the X-Client-Request-Id of one logical call (all its attempts)
    Reply(url, status, masks)       where an answer came from; builds the errors about it
      .status_error(headers, raw)   a non-2xx answer -> RateLimited / ServerError / ClientError
      .bad(raw, why, retryable=)    a 2xx answer that breaks the API's promise -> BadResponse
    parse_body(request, raw, reply) a whole JSON body -> LLMResponse
    StreamAccumulator               SSE bytes, chunk by chunk -> LLMResponse (deltas, timings)

Every error raised here is a :class:`~pytest_iterate.client.errors.BadResponse`
(:class:`~pytest_iterate.client.errors.StreamError` for a broken stream) or an
:class:`~pytest_iterate.client.errors.HTTPStatusError`, whatever the bytes: JSON of
the wrong shape or of the wrong types, numbers out of range, nesting too deep to
parse (``tests/unit/client/test_wire_fuzz.py`` feeds it such answers). The values in ``Reply.masks``
(the credential) are replaced by ``***`` in the message and body of every error that
leaves here, a stream's error events included, so an endpoint that echoes the key
back cannot put it into a traceback or a report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_iterate.client.errors import (
    BadResponse,
    ConnectError,
    HTTPStatusError,
    StreamError,
    error_for_status,
)
from pytest_iterate.client.retry import parse_retry_after
from pytest_iterate.client.secret import Secret
from pytest_iterate.client.sse import StreamDecoder
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage

__all__ = ["REQUEST_ID_HEADER", "Reply", "StreamAccumulator", "encode_body", "new_request_id", "parse_body"]

OnDelta = Callable[[str], None]

REQUEST_ID_HEADER = "X-Client-Request-Id"
"""Sent with every attempt: the same random id on every retry of one logical call."""

# what a malformed answer can make json.loads or a field lookup raise
_SHAPE_ERRORS = (KeyError, TypeError, IndexError, AttributeError, ValueError, OverflowError)


def encode_body(request: LLMRequest, default_model: str) -> bytes:
    """The request's JSON body as sent (``request.model`` or ``default_model``)."""
    return json.dumps(request.body(default_model)).encode()


def new_request_id() -> str:
    """A fresh random id for one logical request: 32 hex digits."""
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Reply:
    """Where an answer came from (URL, status) and which secrets must not show in errors about it."""

    url: str
    status: int
    masks: tuple[Secret, ...] = ()

    def masked(self, raw: bytes) -> bytes:
        for secret in self.masks:
            raw = secret.mask(raw)
        return raw

    def status_error(self, headers: Mapping[str, str], raw: bytes) -> HTTPStatusError:
        """The error for a non-2xx answer: code and message from an OpenAI error body if any."""
        raw = self.masked(raw)
        try:
            code, detail = _error_fields(_loads(raw))
        except RecursionError:  # str() of a value nested too deep to show
            code, detail = None, None
        if detail is None and raw:
            detail = repr(raw[:80])
        return error_for_status(
            self.status,
            url=self.url,
            body=raw,
            retry_after_s=parse_retry_after(headers),
            code=code,
            detail=detail,
        )

    def bad(self, raw: bytes, why: str, *, retryable: bool) -> BadResponse:
        """A 2xx answer that is not what the API promises; ``why`` completes "answered HTTP 200 with"."""
        raw = self.masked(raw)
        return BadResponse(
            f"{self.url} answered HTTP {self.status} with {why}; first bytes: {raw[:80]!r}",
            url=self.url,
            status=self.status,
            body=raw,
            retryable=retryable,
        )

    def stream_error(self, exc: StreamError) -> StreamError:
        """``exc`` (from the SSE decoder) with the secrets masked in its message and body."""
        if not self.masks:
            return exc
        message = self.masked(str(exc).encode()).decode("utf-8", errors="replace")
        return StreamError(message, url=self.url, status=self.status, body=self.masked(exc.body))


def _loads(raw: bytes) -> Any:
    """The JSON value of ``raw``, or None when it is not JSON (nested too deep included)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _dumps(payload: Any) -> bytes:
    """``payload`` as JSON for an error's body (a placeholder when it cannot be written)."""
    try:
        return json.dumps(payload, default=str).encode()
    except (ValueError, TypeError, RecursionError):
        return b"<an event that cannot be shown>"


def _text(value: Any, field: str) -> str:
    """A text field: a string, or null for none."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{field} is {type(value).__name__}, not a string")
    return value


def _optional_str(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field} is {type(value).__name__}, not a string")
    return value


def _usage(value: Any) -> Usage | None:
    if value and not isinstance(value, dict):
        raise TypeError(f"usage is {type(value).__name__}, not an object")
    return Usage.from_json(value)  # int() of its counts: TypeError / ValueError / OverflowError


def _error_fields(data: Any) -> tuple[str | None, str | None]:
    """``(code, message)`` of an OpenAI error body (``{"error": {...}}`` or the object itself)."""
    code: str | None = None
    detail: str | None = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            if err.get("code") is not None:
                code = str(err["code"])
            elif err.get("type") is not None:
                code = str(err["type"])
            if err.get("message"):
                detail = str(err["message"])[:200]
        elif isinstance(err, str):
            detail = err[:200]
    return code, detail


def parse_body(request: LLMRequest, raw: bytes, reply: Reply) -> LLMResponse:
    """A whole (non-streamed) JSON answer as an :class:`LLMResponse` (no timings yet).

    A body that is not JSON is a retryable :class:`BadResponse` (garbled or cut); JSON
    of the wrong shape is not retryable (a retry would get the same answer).
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise reply.bad(raw, "a body that is not JSON", retryable=True) from None
    if not isinstance(data, dict):
        raise reply.bad(raw, "JSON that is not an object", retryable=False)
    choices = data.get("choices")
    if not choices or not isinstance(choices, list):
        raise reply.bad(raw, "no choices", retryable=False)
    try:
        texts: list[str] | None = None
        first = choices[0]
        if request.endpoint == "chat":
            text = _text(first["message"]["content"], "message.content")
        elif isinstance(request.prompt, tuple):
            texts = _list_texts(choices, len(request.prompt))
            text = texts[0] if texts else ""
        else:
            text = _text(first["text"], "text")
        finish = _optional_str(first.get("finish_reason"), "finish_reason")
        usage = _usage(data.get("usage"))
        model = _optional_str(data.get("model"), "model")
    except _SHAPE_ERRORS as exc:
        why = f"a choice missing a field or of the wrong type ({exc!r})"
        raise reply.bad(raw, why, retryable=False) from None
    return LLMResponse(text=text, finish_reason=finish, usage=usage, model=model, raw=data, texts=texts)


def _list_texts(choices: list[Any], n: int) -> list[str]:
    texts: list[str | None] = [None] * n
    for pos, choice in enumerate(choices):
        index = choice.get("index", pos)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
            raise ValueError(f"choice index {index!r} outside 0..{n - 1}")
        texts[index] = _text(choice["text"], "text")
    if any(t is None for t in texts):
        raise ValueError(f"{n} prompts but {len(choices)} choices")
    return [t or "" for t in texts]


class StreamAccumulator:
    """One streamed answer, fed raw SSE bytes as they arrive; :meth:`finish` builds the response.

    Content deltas go to ``on_delta`` as they come (for a list prompt, only prompt 0's)
    and are timed on ``clock`` from ``started``. ``usage``, ``model`` and the last
    ``finish_reason`` are taken from whichever event carries them.

    >>> import itertools
    >>> ticks = itertools.count(1)
    >>> acc = StreamAccumulator(LLMRequest(stream=True), Reply("u", 200), started=0.0,
    ...                         clock=lambda: float(next(ticks)))
    >>> acc.feed(b'data: {"choices": [{"delta": {"content": "hi"}}]}\\n\\n')
    False
    >>> acc.feed(b'data: [DONE]\\n\\n')
    True
    >>> r = acc.finish(); r.text, r.chunks, r.chunk_times_s
    ('hi', ['hi'], [1.0])
    """

    __slots__ = (
        "_chat",
        "_chunks",
        "_clock",
        "_decoder",
        "_finish",
        "_model",
        "_n_prompts",
        "_on_delta",
        "_per_index",
        "_reply",
        "_started",
        "_times",
        "_ttft",
        "_usage",
    )

    def __init__(
        self,
        request: LLMRequest,
        reply: Reply,
        *,
        started: float,
        clock: Callable[[], float],
        on_delta: OnDelta | None = None,
    ) -> None:
        self._reply = reply
        self._decoder = StreamDecoder(url=reply.url, status=reply.status)
        self._chat = request.endpoint == "chat"
        self._n_prompts = len(request.prompt) if isinstance(request.prompt, tuple) else 0
        self._per_index: list[list[str]] = [[] for _ in range(self._n_prompts)]
        self._chunks: list[str] = []
        self._times: list[float] = []
        self._ttft: float | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._model: str | None = None
        self._started = started
        self._clock = clock
        self._on_delta = on_delta

    def feed(self, chunk: bytes) -> bool:
        """Take the next bytes off the wire; True once ``data: [DONE]`` has arrived."""
        decoder = self._decoder
        try:
            payloads = decoder.feed(chunk)
        except StreamError as exc:
            raise self._reply.stream_error(exc) from None
        for payload in payloads:
            self._take(payload)
        return decoder.done

    def cut(self, exc: ConnectError) -> StreamError:
        """The error for a connection lost mid-stream (raise it ``from exc``)."""
        reply = self._reply
        return StreamError(
            f"{reply.url}: the stream was cut ({type(exc.__cause__ or exc).__name__})",
            url=reply.url,
            status=reply.status,
        )

    def finish(self) -> LLMResponse:
        """The end of the body: the whole response, or StreamError when ``[DONE]`` never came."""
        try:
            payloads = self._decoder.close()
        except StreamError as exc:
            raise self._reply.stream_error(exc) from None
        for payload in payloads:
            self._take(payload)
        total = self._clock() - self._started
        texts = ["".join(parts) for parts in self._per_index] if self._n_prompts else None
        return LLMResponse(
            text=texts[0] if texts else "".join(self._chunks),
            finish_reason=self._finish,
            usage=self._usage,
            model=self._model,
            ttft_s=self._ttft if self._ttft is not None else total,
            total_s=total,
            chunks=self._chunks,
            chunk_times_s=self._times,
            texts=texts,
        )

    def _take(self, payload: dict[str, Any]) -> None:
        try:
            deltas = self._read(payload)
        except _SHAPE_ERRORS as exc:
            why = f"a malformed stream event ({exc!r})"
            raise self._reply.bad(_dumps(payload), why, retryable=False) from None
        on_delta = self._on_delta
        if on_delta is not None:  # outside the try: the consumer's own errors stay its own
            for delta in deltas:
                on_delta(delta)

    def _read(self, payload: dict[str, Any]) -> list[str]:
        """Record one event; return the deltas for ``on_delta``. Raises on a malformed event."""
        if payload.get("usage"):
            self._usage = _usage(payload["usage"])
        if self._model is None:
            self._model = _optional_str(payload.get("model"), "model")
        choices = payload.get("choices")
        if not choices:  # absent, null or empty: an event with usage or model only
            return []
        if not isinstance(choices, list):
            raise TypeError(f"choices is {type(choices).__name__}, not a list")
        n_prompts = self._n_prompts
        shown: list[str] = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise TypeError(f"a choice is {type(choice).__name__}, not an object")
            if self._chat:
                delta_obj = choice.get("delta") or {}
                if not isinstance(delta_obj, dict):
                    raise TypeError(f"delta is {type(delta_obj).__name__}, not an object")
                delta = _text(delta_obj.get("content"), "delta.content")
            else:
                delta = _text(choice.get("text"), "text")
            finish = choice.get("finish_reason")
            if finish:
                self._finish = _optional_str(finish, "finish_reason")
            if not delta:
                continue
            index = choice.get("index", 0)
            if n_prompts:
                if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n_prompts:
                    raise ValueError(f"a stream choice index {index!r} outside 0..{n_prompts - 1}")
                self._per_index[index].append(delta)
            elif index != 0:
                continue
            now = self._clock() - self._started
            if self._ttft is None:
                self._ttft = now
            self._chunks.append(delta)
            self._times.append(now)
            if not n_prompts or index == 0:
                shown.append(delta)
        return shown
