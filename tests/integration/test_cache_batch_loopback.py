"""Cache and batch over the real LLMClient and a real aiohttp.web server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from pytest_iterate.batch.call import EndpointCapabilities, batch_llm_call, batch_llm_call_results
from pytest_iterate.batch.packing import format_packed_answer, parse_packed_prompt
from pytest_iterate.cache import CachingCaller, ResponseCache
from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest

CHUNKS = ["The ", "answer ", "is 4."]
Loopback = Callable[[web.Application], Awaitable[str]]


class Upstream:
    """Chat (plain, streamed, packed) and completions (list prompts only if ``native``)."""

    def __init__(self, *, native: bool) -> None:
        self.native = native
        self.chat_calls = 0
        self.completion_calls = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.chat_calls += 1
        await asyncio.sleep(0.03)
        content = body["messages"][-1]["content"]
        items = parse_packed_prompt(content)
        if items is not None:
            text = "Here you go.\n" + format_packed_answer([f"A({p})" for p in items])
            return web.json_response(
                {"choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}]}
            )
        if not body.get("stream"):
            return web.json_response(
                {
                    "choices": [
                        {"index": 0, "message": {"content": f"A({content})"}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in CHUNKS:
            event = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.completion_calls += 1
        prompt = body["prompt"]
        if isinstance(prompt, list) and not self.native:
            return web.json_response({"error": {"message": "list prompts unsupported"}}, status=500)
        prompts = prompt if isinstance(prompt, list) else [prompt]
        choices = [{"index": i, "text": f"A({p})", "finish_reason": "stop"} for i, p in enumerate(prompts)]
        return web.json_response({"choices": list(reversed(choices))})  # index order, not list order


def _app(upstream: Upstream) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.chat)
    app.router.add_post("/v1/completions", upstream.completions)
    return app


@pytest.fixture
async def chat_server(loopback: Loopback) -> tuple[Upstream, str]:
    upstream = Upstream(native=True)
    return upstream, await loopback(_app(upstream)) + "/v1"


async def test_cached_client_coalesces_replays_streams_and_counts(
    chat_server: tuple[Upstream, str], tmp_path: Path
) -> None:
    upstream, url = chat_server
    config = IterateConfig(base_url=url, cache_dir=str(tmp_path / "cache"), max_attempts=1)
    async with LLMClient(config) as client:
        cache = ResponseCache(config, client.metrics)
        caller = CachingCaller(client.call, cache, base_url=client.base_url, default_model=client.model)
        question = LLMRequest(messages=({"role": "user", "content": "2+2?"},), params={"temperature": 0})
        answers = await asyncio.gather(*(caller(question) for _ in range(20)))
        assert upstream.chat_calls == 1 and {a.text for a in answers} == {"A(2+2?)"}

        streamed = question.replace(messages=({"role": "user", "content": "stream me"},), stream=True)
        live: list[str] = []
        first = await caller(streamed, on_delta=live.append)
        replay: list[str] = []
        second = await caller(streamed, on_delta=replay.append)
        assert live == replay == CHUNKS and first.text == second.text == "The answer is 4."
        assert second.cache_tier == "memory" and upstream.chat_calls == 2
        cache.close()

        restarted = ResponseCache(config, client.metrics)
        again = CachingCaller(client.call, restarted, base_url=client.base_url, default_model=client.model)
        assert (await again(question)).cache_tier == "disk" and upstream.chat_calls == 2
        restarted.close()
        text = client.metrics.exposition().decode()
        assert 'iterate_cache_requests_total{result="hit",tier="disk"} 1.0' in text
        assert 'iterate_cache_requests_total{result="hit",tier="memory"} 1.0' in text


@pytest.mark.parametrize("native", [True, False], ids=["native-ok", "llama-500"])
async def test_batch_over_the_real_client(native: bool, tmp_path: Path, loopback: Loopback) -> None:
    upstream = Upstream(native=native)
    url = await loopback(_app(upstream)) + "/v1"
    config = IterateConfig(base_url=url, max_attempts=1, cache_enabled=False)
    caps = EndpointCapabilities()
    prompts = [f"q{i}" for i in range(10)] + ["q1", "q2"]
    async with LLMClient(config) as client:
        result = await batch_llm_call_results(prompts, client=client, pack_size=4, capabilities=caps)
        assert result.texts() == [f"A({p})" for p in prompts]
        assert caps.supports_native(client.base_url) is native
        if native:  # 3 list-prompt requests for 10 unique prompts
            assert upstream.completion_calls == 3 and upstream.chat_calls == 0
        else:  # one refused probe, then 3 packed chat requests
            assert upstream.completion_calls == 1 and upstream.chat_calls == 3
        assert result.calls_saved == len(prompts) - result.calls_made > 0
        out = await batch_llm_call(prompts[:5], client=client, pack_size=4, capabilities=caps)
        assert out == [f"A({p})" for p in prompts[:5]]
        assert upstream.completion_calls == (4 if native else 1)  # no second probe; q4 alone: chat
