"""The OpenAI wire format on the service side: bodies in, answers and errors out.

:func:`parse_request` turns the JSON body of ``POST /v1/chat/completions`` or
``/v1/completions`` into an :class:`~pytest_iterate.client.types.LLMRequest`, or raises
:class:`InvalidRequest` naming the field; :func:`completion_body` and :func:`chunk`
render an :class:`~pytest_iterate.client.types.LLMResponse` the way OpenAI does (with an
``iterate`` object added: where the answer came from, what the token guard did);
:func:`error_for` maps the pipeline's errors to a status, an OpenAI error body and
headers (``Busy``: 503 with ``Retry-After`` and ``retry-after-ms``).

>>> r = parse_request("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}],
...                            "max_tokens": 5, "temperature": 0})
>>> r.model, r.max_tokens, dict(r.params)
('m', 5, {'temperature': 0})
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_iterate.client.errors import (
    BadResponse,
    Busy,
    ConfigError,
    ConnectError,
    ContextOverflow,
    HTTPStatusError,
    RequestTimeout,
)
from pytest_iterate.client.types import Endpoint, LLMRequest, LLMResponse

__all__ = [
    "ErrorReply",
    "InvalidRequest",
    "chunk",
    "completion_body",
    "error_for",
    "parse_request",
    "retry_after_headers",
]

# Body fields the service reads itself; every other field is passed on as a parameter.
_OWN_FIELDS = frozenset(
    {"messages", "prompt", "model", "max_tokens", "max_completion_tokens", "stream", "stream_options"}
)


class InvalidRequest(ValueError):
    """A body the service cannot send on: a 400 naming the field (``param``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse_request(route: Endpoint, data: Any) -> LLMRequest:
    """The request a JSON body asks for on ``route`` (``"chat"`` or ``"completions"``)."""
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    messages: tuple[Mapping[str, Any], ...] = ()
    prompt: str | tuple[str, ...] | None = None
    if route == "chat":
        raw = data.get("messages")
        if not isinstance(raw, list) or not raw:
            raise InvalidRequest("'messages' must be a non-empty list of messages", param="messages")
        for i, message in enumerate(raw):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"messages[{i}] must be an object with a 'role'; got {message!r:.80}",
                    param=f"messages[{i}]",
                )
        messages = tuple(raw)
    else:
        raw_prompt = data.get("prompt")
        if isinstance(raw_prompt, str):
            prompt = raw_prompt
        elif isinstance(raw_prompt, list) and raw_prompt and all(isinstance(p, str) for p in raw_prompt):
            prompt = tuple(raw_prompt)
        else:
            raise InvalidRequest("'prompt' must be a string or a non-empty list of strings", param="prompt")
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidRequest(f"'model' must be a model name; got {model!r:.80}", param="model")
    max_tokens = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"'{key}' must be a whole number >= 1; got {value!r:.80}", param=key)
        max_tokens = value
        break
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest(f"'stream' must be true or false; got {stream!r:.80}", param="stream")
    n = data.get("n", 1)
    if n != 1:
        raise InvalidRequest(f"'n' must be 1 (one answer a request, each cached); got {n!r:.80}", param="n")
    params = {k: v for k, v in data.items() if k not in _OWN_FIELDS and k != "n"}
    return LLMRequest(
        messages=messages,
        prompt=prompt,
        endpoint=route,
        model=model,
        max_tokens=max_tokens,
        stream=stream,
        params=params,
    )


def _id(route: Endpoint) -> str:
    return f"{'chatcmpl' if route == 'chat' else 'cmpl'}-{os.urandom(12).hex()}"


def _iterate_info(response: LLMResponse) -> dict[str, Any]:
    return {
        "cache": response.cache_tier or "miss",
        "attempts": response.attempts,
        "warnings": [w.to_json() for w in response.warnings],
    }


def _usage(response: LLMResponse) -> dict[str, int] | None:
    usage = response.usage
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_body(request: LLMRequest, response: LLMResponse, model: str) -> dict[str, Any]:
    """The JSON answer of a whole (not streamed) completion."""
    route = request.endpoint
    name = response.model or request.model or model
    if route == "chat":
        choices: list[dict[str, Any]] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.text},
                "finish_reason": response.finish_reason or "stop",
            }
        ]
        kind = "chat.completion"
    else:
        texts = response.texts if response.texts is not None else [response.text]
        choices = [
            {"index": i, "text": t, "logprobs": None, "finish_reason": response.finish_reason or "stop"}
            for i, t in enumerate(texts)
        ]
        kind = "text_completion"
    body: dict[str, Any] = {
        "id": _id(route),
        "object": kind,
        "created": int(time.time()),
        "model": name,
        "choices": choices,
        "iterate": _iterate_info(response),
    }
    usage = _usage(response)
    if usage is not None:
        body["usage"] = usage
    return body


@dataclass(slots=True)
class StreamIds:
    """What every chunk of one stream repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, request: LLMRequest, model: str) -> StreamIds:
        return cls(_id(request.endpoint), int(time.time()), request.model or model)


def chunk(
    request: LLMRequest,
    ids: StreamIds,
    *,
    delta: str | None = None,
    finish_reason: str | None = None,
    response: LLMResponse | None = None,
    usage_only: bool = False,
) -> bytes:
    """One SSE event: a text ``delta``, the closing chunk (``finish_reason``), or the usage chunk."""
    chat = request.endpoint == "chat"
    data: dict[str, Any] = {
        "id": ids.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": ids.created,
        "model": ids.model,
    }
    if usage_only:
        data["choices"] = []
        data["usage"] = _usage(response) if response is not None else None
        if response is not None:
            data["iterate"] = _iterate_info(response)
    elif chat:
        content = {} if delta is None else {"content": delta}
        data["choices"] = [{"index": 0, "delta": content, "finish_reason": finish_reason}]
    else:
        data["choices"] = [
            {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish_reason}
        ]
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (at least 1, as HTTP wants) and ``retry-after-ms`` exact."""
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A status, an OpenAI error body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]

    def encoded(self) -> bytes:
        return json.dumps(self.body).encode()


def _error(
    status: int,
    message: str,
    kind: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ErrorReply:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return ErrorReply(status, body, dict(headers or {}))


def error_for(exc: BaseException) -> ErrorReply:
    """The answer to a request that failed with ``exc``.

    ``Busy`` is 503 ``busy`` with its retry-after; an invalid body or setting 400; a request
    too long for the context window 400 ``context_length_exceeded``; an upstream error
    status passes through (a 429 with its retry-after), except 5xx, which is a 502; no
    answer in time 504; a refused connection or a garbled answer 502."""
    if isinstance(exc, Busy):
        return _error(
            503, str(exc), "server_error", code="busy", headers=retry_after_headers(exc.retry_after_s)
        )
    if isinstance(exc, InvalidRequest):
        return _error(400, str(exc), "invalid_request_error", param=exc.param)
    if isinstance(exc, ContextOverflow):
        return _error(
            400, str(exc), "invalid_request_error", code="context_length_exceeded", param="messages"
        )
    if isinstance(exc, ConfigError):
        return _error(400, str(exc), "invalid_request_error")
    if isinstance(exc, HTTPStatusError):
        headers = retry_after_headers(exc.retry_after_s) if exc.retry_after_s is not None else {}
        if exc.status >= 500:
            return _error(
                502, f"upstream error: {exc}", "server_error", code="upstream_error", headers=headers
            )
        kind = "rate_limit_error" if exc.status == 429 else "invalid_request_error"
        return _error(
            exc.status, f"upstream refused the request: {exc}", kind, code=exc.code, headers=headers
        )
    if isinstance(exc, RequestTimeout):
        return _error(504, f"upstream timeout: {exc}", "server_error", code="upstream_timeout")
    if isinstance(exc, ConnectError | BadResponse):
        return _error(502, f"upstream error: {exc}", "server_error", code="upstream_error")
    return _error(500, f"internal error: {type(exc).__name__}", "server_error")
