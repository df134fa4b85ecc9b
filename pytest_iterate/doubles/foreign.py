"""A loopback OpenAI-compatible server whose tokenizer is not cl100k (a test double).

The token guard counts with cl100k; real servers do not. :class:`ForeignServer`
serves ``/v1/chat/completions`` and ``/v1/completions`` on 127.0.0.1, counts every
prompt with :class:`ForeignTokenizer` (another tokenizer: about 1.1x cl100k for
English, more for code, 2 tokens per CJK character, the UTF-8 bytes of an emoji,
one token per digit) inside a ChatML-like template, and answers 400
``context_length_exceeded`` when prompt + max_tokens exceed its ``window``. Its
``kind`` picks which server it imitates for the guard's probe:

``llama.cpp``         ``GET /props`` (n_ctx), ``POST /tokenize {"content"}``
``vllm``              ``GET /v1/models`` (max_model_len), ``POST /tokenize {"model", "prompt"}``
``tgi``               ``GET /info`` (max_total_tokens), ``POST /tokenize {"inputs"}``
``llama-cpp-python``  ``POST /extras/tokenize/count {"input"}`` (no window route)
``openai``            none of them (404), like OpenAI or the project's mock

It records what it was asked (:attr:`ForeignServer.requests` per method and path)
and the prompt sizes it accepted or rejected, so a test can assert that nothing
over the window ever reached it.

    async with ForeignServer(kind="llama.cpp", window=2048) as srv:
        print(srv.base_url)   # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["KINDS", "ForeignServer", "ForeignTokenizer"]

KINDS = ("llama.cpp", "vllm", "tgi", "llama-cpp-python", "openai")

_PIECES = re.compile(r" ?[A-Za-z]+| +|\n|.", re.S)


class ForeignTokenizer:
    """A deterministic tokenizer unlike cl100k (see the module doc); ``count`` only.

    >>> t = ForeignTokenizer()
    >>> t.count("The quick brown fox"), t.count("2024"), t.count("中文"), t.count("😀")
    (4, 4, 4, 4)
    """

    def count(self, text: str) -> int:
        n = 0
        for match in _PIECES.finditer(text):
            piece = match.group()
            word = piece.lstrip(" ")
            if word and word.isascii() and word.isalpha():
                n += 1 + max(0, math.ceil((len(word) - 6) / 5))
            elif not word:  # spaces only
                n += math.ceil(len(piece) / 4)
            else:
                n += _char_tokens(piece)
        return n

    def chat(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Tokens of a chat prompt: ChatML framing, a default system prompt when none is given."""
        total = 3  # <|im_start|>assistant\n
        if not messages or messages[0].get("role") != "system":
            total += 20
        for message in messages:
            total += 4 + self.count(_content_text(message.get("content")))
        return total


def _char_tokens(ch: str) -> int:
    code = ord(ch)
    if ch == "\n" or code < 0x80:
        return 1
    if 0x3000 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xFF00 <= code <= 0xFFEF:
        return 2
    if unicodedata.category(ch)[0] == "S" or code >= 0x1F000 or code in (0x200D, 0xFE0F):
        return len(ch.encode("utf-8"))
    if unicodedata.category(ch)[0] == "L" and code < 0x250:
        return 1
    return 2


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] if isinstance(p, dict) and isinstance(p.get("text"), str) else json.dumps(p)
            for p in content
        )
    return json.dumps(content)


class ForeignServer:
    """aiohttp.web on 127.0.0.1 (port 0: chosen by the OS); see the module doc.

    ``state_counts`` False answers a context error without its counts (llama.cpp's
    wording); ``api_key`` makes every route require ``Authorization: Bearer <key>``;
    ``tokenize_latency_s`` and ``completion_latency_s`` delay those answers.
    """

    def __init__(
        self,
        *,
        kind: str = "llama.cpp",
        window: int = 2048,
        model: str = "foreign",
        state_counts: bool = True,
        api_key: str | None = None,
        tokenize_latency_s: float = 0.0,
        completion_latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not valid; valid kinds: {', '.join(KINDS)}")
        self.kind = kind
        self.window = window
        self.model = model
        self.state_counts = state_counts
        self.api_key = api_key
        self.tokenize_latency_s = tokenize_latency_s
        self.completion_latency_s = completion_latency_s
        self.host, self.port = host, port
        self.tokenizer = ForeignTokenizer()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.accepted: list[tuple[int, int]] = []  # (prompt tokens, max_tokens) answered 200
        self.rejected: list[tuple[int, int]] = []  # answered 400 context_length_exceeded
        self.unauthorized = 0
        self._runner: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def tokenize_calls(self) -> int:
        return sum(n for (method, path), n in self.requests.items() if "tokenize" in path)

    def __repr__(self) -> str:
        return f"ForeignServer(kind={self.kind!r}, window={self.window}, url={self.base_url!r})"

    # -- handlers -------------------------------------------------------------------------
    async def _dispatch(self, request: Any) -> Any:
        from aiohttp import web

        self.requests[(request.method, request.path)] += 1
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.unauthorized += 1
            return web.json_response({"error": {"message": "Invalid API key", "code": 401}}, status=401)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        route = (request.method, request.path)
        handler = self._routes().get(route)
        if handler is None:
            return web.json_response({"error": {"message": f"Unknown path {request.path!r}"}}, status=404)
        status, payload = await handler(body)
        return web.json_response(payload, status=status)

    def _routes(self) -> dict[tuple[str, str], Any]:
        routes: dict[tuple[str, str], Any] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completion,
            ("GET", "/v1/models"): self._models,
        }
        if self.kind == "llama.cpp":
            routes[("GET", "/props")] = self._props
            routes[("POST", "/tokenize")] = self._tokenize("content", lambda n: {"tokens": list(range(n))})
        elif self.kind == "vllm":
            routes[("POST", "/tokenize")] = self._tokenize(
                "prompt", lambda n: {"count": n, "max_model_len": self.window, "tokens": list(range(n))}
            )
        elif self.kind == "tgi":
            routes[("GET", "/info")] = self._info
            routes[("POST", "/tokenize")] = self._tokenize(
                "inputs", lambda n: [{"id": i, "text": "x", "start": i, "stop": i + 1} for i in range(n)]
            )
        elif self.kind == "llama-cpp-python":
            routes[("POST", "/extras/tokenize/count")] = self._tokenize("input", lambda n: {"count": n})
        return routes

    async def _models(self, body: Any) -> tuple[int, Any]:
        item: dict[str, Any] = {"id": self.model, "object": "model", "owned_by": "me"}
        if self.kind == "vllm":
            item["max_model_len"] = self.window
        return 200, {"object": "list", "data": [item]}

    async def _props(self, body: Any) -> tuple[int, Any]:
        return 200, {"default_generation_settings": {"n_ctx": self.window}, "total_slots": 1}

    async def _info(self, body: Any) -> tuple[int, Any]:
        return 200, {
            "model_id": self.model,
            "max_total_tokens": self.window,
            "max_input_tokens": self.window - 1,
        }

    def _tokenize(self, field: str, shape: Any) -> Any:
        async def handler(body: Any) -> tuple[int, Any]:
            text = body.get(field) if isinstance(body, dict) else None
            if not isinstance(text, str):
                return 422, {"error": {"message": f"field {field!r} is required"}}
            if self.tokenize_latency_s > 0:
                await asyncio.sleep(self.tokenize_latency_s)
            return 200, shape(self.tokenizer.count(text))

        return handler

    async def _chat(self, body: Any) -> tuple[int, Any]:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            return 400, {"error": {"message": "messages must be a list"}}
        prompt = self.tokenizer.chat(messages)
        return await self._answer(body, prompt, "in the messages")

    async def _completion(self, body: Any) -> tuple[int, Any]:
        prompt_text = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt_text, str):
            return 400, {"error": {"message": "prompt must be a string"}}
        return await self._answer(body, self.tokenizer.count(prompt_text) + 1, "in your prompt")

    async def _answer(self, body: dict[str, Any], prompt: int, where: str) -> tuple[int, Any]:
        max_tokens = int(body.get("max_tokens") or 16)
        if prompt + max_tokens > self.window:
            self.rejected.append((prompt, max_tokens))
            if self.state_counts:
                message = (
                    f"This model's maximum context length is {self.window} tokens. However, you requested "
                    f"{prompt + max_tokens} tokens ({prompt} {where}, {max_tokens} in the completion)."
                )
            else:
                message = "the request exceeds the available context size, try increasing it"
            error = {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}
            return 400, {"error": error}
        self.accepted.append((prompt, max_tokens))
        if self.completion_latency_s > 0:
            await asyncio.sleep(self.completion_latency_s)
        completion = min(max_tokens, 8)
        text = "```python\ndef answer():\n    return 42\n```"
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if "messages" in body:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return 200, {"id": "x", "model": self.model, "choices": [choice], "usage": usage}

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> ForeignServer:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ForeignServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
