"""Validate: the body of a completion request -> a typed :class:`CompletionRequest`.

The first of the core's three steps (validate, plan, render; see :mod:`.core`).
:func:`parse_completion` reads the JSON body once and either returns a
:class:`CompletionRequest` (prompts, model, ``max_tokens``, stream flags and prompt
token counts, everything later steps need) or an :class:`Invalid` carrying the
``400 invalid_request_error`` :class:`Refusal` to send.

A :class:`Refusal` is any error answer of the mock in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``); the plan step makes them too
(context window, rate limit, injected status faults).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pytest_iterate.doubles.mock.answers import prompt_text
from pytest_iterate.doubles.mock.digest import request_digest

if TYPE_CHECKING:
    from pytest_iterate.tokens.counter import TokenCounter

__all__ = [
    "REQUEST_ID_HEADER",
    "CompletionRequest",
    "Invalid",
    "Refusal",
    "Route",
    "header_request_id",
    "parse_completion",
]

Route = Literal["chat", "completions"]

#: The header a client keeps the same over the retries of one call (case-insensitive).
REQUEST_ID_HEADER = "x-client-request-id"
_MAX_ID_CHARS = 128  # longer ids are kept as their sha256 (the id table stays small)


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error answer: HTTP ``status`` with an OpenAI-shaped error body.

    ``fault`` is the kind the core counts it under (``"rate_limit"``,
    ``"context_length_exceeded"``, an injected kind), None for a plain bad request.
    """

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    fault: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


@dataclass(frozen=True, slots=True)
class Invalid:
    """A request refused before planning; ``body`` is the parsed JSON (None when unparseable)."""

    refusal: Refusal
    request_id: str
    body: Any = None


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One valid completion request, as the plan and render steps need it.

    ``prompts`` holds one text for a chat request (the one its answer is keyed on,
    see :func:`~.answers.prompt_text`) and one per choice for ``/v1/completions``.
    ``prompt_tokens`` is what ``usage`` reports; ``window_tokens`` is what the
    context window sees (the whole chat, or the longest single completion prompt).
    ``digest`` is :func:`~.digest.request_digest` of the body, tagged in the answers;
    ``request_id`` the ``X-Client-Request-Id`` header, or the digest without one.
    """

    route: Route
    path: str
    body: Mapping[str, Any]
    prompts: tuple[str, ...]
    model: str
    max_tokens: int | None
    stream: bool
    include_usage: bool
    prompt_tokens: int
    window_tokens: int
    digest: str
    request_id: str

    @property
    def wanted_tokens(self) -> int:
        """Window tokens plus the completion budget (what must fit the context window)."""
        return self.window_tokens + (self.max_tokens or 0)

    @property
    def rate_tokens(self) -> int:
        """What the token rate limit charges: the prompt tokens plus ``max_tokens`` for every
        answer asked for (each prompt of a list gets its own)."""
        return self.prompt_tokens + (self.max_tokens or 0) * len(self.prompts)


def _whole(value: Any) -> bool:
    """An int, or a float with no fractional part (``json`` reads ``100.0`` as a float)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def header_request_id(headers: Mapping[str, str]) -> str | None:
    """The ``X-Client-Request-Id`` of a request (any letter case), or None."""
    value = headers.get(REQUEST_ID_HEADER)
    if value is None and isinstance(headers, dict):  # the front ends' headers are case-insensitive
        value = next((v for k, v in headers.items() if k.lower() == REQUEST_ID_HEADER), None)
    if not value:
        return None
    value = str(value)
    return value if len(value) <= _MAX_ID_CHARS else hashlib.sha256(value.encode()).hexdigest()


def parse_completion(
    route: Route,
    path: str,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    default_model: str,
    counter: TokenCounter,
) -> CompletionRequest | Invalid:
    """Parse ``raw`` (the HTTP body) sent to ``route``; never raises for bad input."""
    header_id = header_request_id(headers)

    def bad(message: str, *, param: str | None = None, body: Any = None) -> Invalid:
        if header_id is not None:
            rid = header_id
        elif isinstance(body, dict):
            rid = request_digest(body)
        else:
            rid = hashlib.sha256(raw).hexdigest()[:16]
        return Invalid(Refusal(400, message, param=param), rid, body)

    try:
        data = json.loads(raw or b"null")
    except ValueError:
        return bad("We could not parse the JSON body of your request.")
    if not isinstance(data, dict):
        return bad("The request body must be a JSON object.")
    if route == "chat":
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            return bad("'messages' is a required property", param="messages", body=data)
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                what = f"expected an object with a 'role', got {message!r:.80}"
                return bad(f"Invalid value for 'messages[{i}]': {what}", param=f"messages[{i}]", body=data)
        prompts: tuple[str, ...] = (prompt_text(data),)
    else:
        p = data.get("prompt")
        if isinstance(p, str):
            prompts = (p,)
        elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
            prompts = tuple(p)
        else:
            return bad("'prompt' must be a string or a list of strings", param="prompt", body=data)
    model = str(data.get("model") or default_model)
    budget_key = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    budget = data.get(budget_key)
    max_tokens: int | None = None
    if budget is not None:
        if not _whole(budget) or budget < 0:
            return bad(
                f"Invalid value for '{budget_key}': expected an integer >= 0, got {budget!r:.80}",
                param=budget_key,
                body=data,
            )
        max_tokens = int(budget)
    stream = bool(data.get("stream"))
    opts = data.get("stream_options")
    include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    digest = request_digest(data)
    if route == "chat":
        prompt_tokens = window_tokens = counter.count_messages(data["messages"], model)
    else:
        counts = [counter.count_cached(x) for x in prompts]
        prompt_tokens, window_tokens = sum(counts), max(counts)
    return CompletionRequest(
        route=route,
        path=path,
        body=data,
        prompts=prompts,
        model=model,
        max_tokens=max_tokens,
        stream=stream,
        include_usage=include_usage,
        prompt_tokens=prompt_tokens,
        window_tokens=window_tokens,
        digest=digest,
        request_id=header_id if header_id is not None else digest,
    )
