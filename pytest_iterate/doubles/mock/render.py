"""Render: a :class:`~.plan.Plan` -> a JSON body or an SSE stream in OpenAI's shapes.

The last of the core's three steps (validate, plan, render; see :mod:`.core`).
:func:`completion_body` is the whole answer (``chat.completion`` or
``text_completion``); :func:`sse_events` yields the streamed one, each token due
at ``plan.start + plan.ttft_s + step * plan.itl_s`` on the core's clock, then the
finish chunk, the usage chunk when asked (``stream_options.include_usage``) and
``[DONE]``. Body faults are applied here: ``empty_choices`` (no choices),
``malformed_json`` and ``stream_cut`` (a body cut in half, or an invalid event /
a stream ending without ``[DONE]`` half way), ``stream_error`` (an ``error`` event).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pytest_iterate.doubles.mock.plan import Plan

__all__ = ["CREATED", "ClosingStream", "completion_body", "sse_events"]

CREATED = 1767225600  # the fixed "created" of every answer (2026-01-01): bodies are reproducible

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
TokenBytes = Callable[[int], bytes]


def _usage(plan: Plan) -> dict[str, int]:
    n_out = plan.completion_tokens
    prompt = plan.request.prompt_tokens
    return {"prompt_tokens": prompt, "completion_tokens": n_out, "total_tokens": prompt + n_out}


def completion_body(plan: Plan) -> bytes:
    """The non-streamed answer of ``plan`` (fault applied)."""
    request, answers = plan.request, plan.answers
    if request.route == "chat":
        choices: list[dict[str, Any]] = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answers[0].text, "refusal": None},
                "logprobs": None,
                "finish_reason": answers[0].finish_reason,
            }
        ]
        obj = "chat.completion"
    else:
        choices = [
            {"index": i, "text": a.text, "logprobs": None, "finish_reason": a.finish_reason}
            for i, a in enumerate(answers)
        ]
        obj = "text_completion"
    if plan.fault == "empty_choices":
        choices = []
    body = json.dumps(
        {
            "id": plan.id,
            "object": obj,
            "created": CREATED,
            "model": request.model,
            "choices": choices,
            "usage": _usage(plan),
        }
    ).encode()
    if plan.fault in ("malformed_json", "stream_cut"):
        body = body[: len(body) // 2]
    return body


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


_STREAM_ERROR = {
    "error": {
        "message": "The server had an error while streaming.",
        "type": "server_error",
        "param": None,
        "code": "stream_error",
    }
}


async def sse_events(plan: Plan, clock: Clock, sleep: Sleep, token_bytes: TokenBytes) -> AsyncIterator[bytes]:
    """The streamed answer of ``plan``: one event per token step, paced on ``clock``.

    ``token_bytes`` decodes one token id (the answers are ASCII, so each token
    decodes on its own).
    """
    request, fault = plan.request, plan.fault
    chat = request.route == "chat"
    base: dict[str, Any] = {
        "id": plan.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": CREATED,
        "model": request.model,
    }
    texts = [a.tokens for a in plan.answers]
    longest = plan.longest
    cut_at = longest // 2
    start, ttft, itl = plan.start, plan.ttft_s, plan.itl_s
    if fault == "empty_choices":
        if ttft > 0:
            await sleep(ttft)
        yield _sse({**base, "choices": []})
        yield b"data: [DONE]\n\n"
        return
    for step in range(longest):
        due = start + ttft + step * itl
        wait = due - clock()
        if wait > 0:
            await sleep(wait)
        if step == cut_at and fault in ("stream_cut", "stream_error", "malformed_json"):
            if fault == "stream_cut":
                return
            if fault == "stream_error":
                yield b"event: error\ndata: " + json.dumps(_STREAM_ERROR).encode() + b"\n\n"
                return
            yield b'data: {"id": "' + plan.id.encode() + b'", "choices": [{"delta": {"content": \n\n'
        choices = []
        for i, toks in enumerate(texts):
            if step < len(toks):
                piece = token_bytes(toks[step]).decode("utf-8", errors="replace")
                if chat:
                    delta: dict[str, Any] = {"content": piece}
                    if step == 0:
                        delta = {"role": "assistant", "content": piece}
                    choices.append({"index": i, "delta": delta, "logprobs": None, "finish_reason": None})
                else:
                    choices.append({"index": i, "text": piece, "logprobs": None, "finish_reason": None})
        yield _sse({**base, "choices": choices})
    final: list[dict[str, Any]] = [
        (
            {"index": i, "delta": {}, "logprobs": None, "finish_reason": a.finish_reason}
            if chat
            else {"index": i, "text": "", "logprobs": None, "finish_reason": a.finish_reason}
        )
        for i, a in enumerate(plan.answers)
    ]
    yield _sse({**base, "choices": final})
    if request.include_usage:
        yield _sse({**base, "choices": [], "usage": _usage(plan)})
    yield b"data: [DONE]\n\n"


class ClosingStream:
    """An SSE chunk iterator whose ``on_close`` runs exactly once (end, error or aclose)."""

    def __init__(self, gen: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        self._gen = gen
        self._on_close: Callable[[], None] | None = on_close

    def __aiter__(self) -> ClosingStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._gen.__anext__()
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        if self._on_close is not None:
            cb, self._on_close = self._on_close, None
            cb()

    async def aclose(self) -> None:
        try:
            await self._gen.aclose()  # type: ignore[attr-defined]
        finally:
            self._close()
