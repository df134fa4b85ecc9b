"""The client against a real aiohttp.web server on 127.0.0.1 (port 0), both transports."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import urllib.request
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import BadResponse, RateLimited, ServerError
from pytest_iterate.client.metrics import CONTENT_TYPE_LATEST, METRIC_NAMES, IterateMetrics
from pytest_iterate.client.metrics_server import ThreadedMetricsServer, serve_metrics
from pytest_iterate.client.telemetry import StageRecorder
from pytest_iterate.client.types import LLMRequest

WORDS = ["Hel", "lo ", "wor", "ld ✓"]


class Upstream:
    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.auth: list[str | None] = []
        self.fail_next_429 = 0
        self.request_ids: list[str] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.auth.append(request.headers.get("Authorization"))
        if self.fail_next_429:
            self.fail_next_429 -= 1
            return web.json_response(
                {"error": {"message": "slow", "code": "rate_limit_exceeded"}},
                status=429,
                headers={"retry-after-ms": "10"},
            )
        if not body.get("stream"):
            return web.json_response(
                {
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(WORDS)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 4},
                },
                headers={"x-ratelimit-remaining-requests": "99", "x-ratelimit-reset-requests": "1s"},
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b": hello\n\n")
        for w in WORDS:
            payload = {
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
            }
            data = b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"
            # split every event in two writes, mid-line, to exercise incremental parsing
            await resp.write(data[:7])
            await asyncio.sleep(0.002)
            await resp.write(data[7:])
        last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}}
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = [{"index": i, "text": p.upper(), "finish_reason": "stop"} for i, p in enumerate(prompts)]
        return web.json_response({"choices": list(reversed(choices))})

    async def cut(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"index": 0, "delta": {"content": "par"}}]}\n\n')
        await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.close()  # the connection drops before [DONE]
        return resp

    async def stall(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n')
        await asyncio.sleep(0.8)  # longer than the client's per-attempt timeout
        return resp

    async def drip(self, request: web.Request) -> web.StreamResponse:
        """A slow stream that never goes quiet for long: 5 chunks 0.2 s apart."""
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for w in [*WORDS, "!"]:
            payload = {"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
            await asyncio.sleep(0.2)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def mute(self, request: web.Request) -> web.Response:
        """No status line for 0.8 s (a server stuck before it answers)."""
        await request.read()
        await asyncio.sleep(0.8)
        return web.json_response({"choices": []})

    async def html(self, request: web.Request) -> web.Response:
        return web.Response(
            status=502, text="<html><body>Bad gateway</body></html>", content_type="text/html"
        )

    async def flaky(self, request: web.Request) -> web.Response:
        """503 for the first two attempts of each logical request (told apart by X-Client-Request-Id)."""
        await request.read()
        rid = request.headers.get("X-Client-Request-Id", "")
        self.request_ids.append(rid)
        if self.request_ids.count(rid) <= 2:
            return web.json_response({"error": {"message": "busy"}}, status=503)
        text = f"ok after {self.request_ids.count(rid)}"
        return web.json_response({"choices": [{"message": {"content": text}}]})

    async def html200(self, request: web.Request) -> web.Response:
        return web.Response(status=200, text="<!DOCTYPE html><p>login</p>", content_type="text/html")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, Upstream]]:
    state = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", state.chat)
    app.router.add_post("/v1/completions", state.completions)
    app.router.add_post("/html/v1/chat/completions", state.html)
    app.router.add_post("/cut/v1/chat/completions", state.cut)
    app.router.add_post("/stall/v1/chat/completions", state.stall)
    app.router.add_post("/html200/v1/chat/completions", state.html200)
    app.router.add_post("/drip/v1/chat/completions", state.drip)
    app.router.add_post("/mute/v1/chat/completions", state.mute)
    app.router.add_post("/flaky/v1/chat/completions", state.flaky)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


REQ = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=16, params={"temperature": 0})
TRANSPORTS = ["aiohttp", "httpx"]


class NoSleep:
    async def __call__(self, seconds: float) -> None:
        await asyncio.sleep(0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_non_streaming(
    upstream: tuple[str, Upstream], transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, state = upstream
    monkeypatch.setenv("ITERATE_LOOPBACK_KEY", "sk-loop")
    metrics = IterateMetrics()
    cfg = IterateConfig(base_url=base + "/v1", transport=transport, api_key_env="ITERATE_LOOPBACK_KEY")  # type: ignore[arg-type]
    async with LLMClient(cfg, metrics=metrics) as client:
        resp = await client.call(REQ)
    assert resp.text == "Hello world ✓" and resp.finish_reason == "stop" and resp.attempts == 1
    assert resp.usage is not None and resp.usage.total_tokens == 11
    assert resp.total_s > 0 and resp.ttft_s == resp.total_s
    assert state.bodies[0] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 16,
        "temperature": 0,
    }
    assert state.auth == ["Bearer sk-loop"]
    get = metrics.registry.get_sample_value
    assert get("iterate_requests_total", {"model": "gpt-4o-mini", "outcome": "ok"}) == 1
    assert get("iterate_tokens_total", {"direction": "prompt"}) == 7
    assert get("iterate_request_duration_seconds_count") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_streaming(upstream: tuple[str, Upstream], transport: str) -> None:
    base, state = upstream
    metrics = IterateMetrics()
    cfg = IterateConfig(base_url=base + "/v1", transport=transport)  # type: ignore[arg-type]
    async with LLMClient(cfg, metrics=metrics) as client:
        stream = client.stream(REQ)
        deltas = [d async for d in stream]
    assert deltas == WORDS
    resp = stream.response
    assert resp is not None and resp.text == "Hello world ✓" and resp.chunks == WORDS
    assert resp.finish_reason == "stop" and resp.usage is not None and resp.usage.completion_tokens == 4
    assert resp.ttft_s is not None and 0 < resp.ttft_s <= resp.total_s
    assert len(resp.chunk_times_s) == 4 and resp.chunk_times_s == sorted(resp.chunk_times_s)
    assert state.bodies[0]["stream"] is True
    assert state.bodies[0]["stream_options"] == {"include_usage": True}
    assert metrics.registry.get_sample_value("iterate_time_to_first_token_seconds_count") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_completions_list_prompt(upstream: tuple[str, Upstream], transport: str) -> None:
    base, _ = upstream
    async with LLMClient(IterateConfig(base_url=base + "/v1", transport=transport)) as client:  # type: ignore[arg-type]
        resp = await client.call(LLMRequest(prompt=("a", "b", "c"), endpoint="completions"))
    assert resp.texts == ["A", "B", "C"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_429_then_ok_over_the_wire(upstream: tuple[str, Upstream], transport: str) -> None:
    base, state = upstream
    state.fail_next_429 = 1
    metrics = IterateMetrics()
    async with LLMClient(
        IterateConfig(base_url=base + "/v1", transport=transport), metrics=metrics, sleep=NoSleep()
    ) as client:  # type: ignore[arg-type]
        resp = await client.call(REQ)
    assert resp.attempts == 2
    assert metrics.registry.get_sample_value("iterate_retries_total", {"reason": "429"}) == 1
    state.fail_next_429 = 5
    async with LLMClient(
        IterateConfig(base_url=base + "/v1", transport=transport), sleep=NoSleep()
    ) as client:  # type: ignore[arg-type]
        with pytest.raises(RateLimited) as info:
            await client.call(REQ)
    assert info.value.code == "rate_limit_exceeded" and info.value.retry_after_s == pytest.approx(0.01)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_html_body_is_bad_response_with_status_and_first_bytes(
    upstream: tuple[str, Upstream], transport: str
) -> None:
    base, _ = upstream
    cfg = IterateConfig(base_url=base + "/html200/v1", transport=transport, max_attempts=1)  # type: ignore[arg-type]
    async with LLMClient(cfg) as client:
        with pytest.raises(BadResponse) as info:
            await client.call(REQ)
    assert info.value.status == 200 and "HTTP 200" in str(info.value)
    assert "<!DOCTYPE html>" in str(info.value) and info.value.body.startswith(b"<!DOCTYPE html>")
    cfg = IterateConfig(base_url=base + "/html/v1", transport=transport, max_attempts=1)  # type: ignore[arg-type]
    async with LLMClient(cfg) as client:
        with pytest.raises(ServerError) as info2:
            await client.call(REQ)
    assert info2.value.status == 502 and "<html>" in str(info2.value)


async def test_user_given_httpx_client_not_closed(upstream: tuple[str, Upstream]) -> None:
    from pytest_iterate.client.transport.httpx_transport import HttpxTransport

    base, _ = upstream
    async with httpx.AsyncClient() as own:
        async with LLMClient(IterateConfig(base_url=base + "/v1"), transport=HttpxTransport(own)) as client:
            assert (await client.call(REQ)).text.startswith("Hello")
        assert not own.is_closed


async def test_connection_refused_is_connect_error() -> None:
    import socket

    from pytest_iterate.client.errors import ConnectError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = IterateConfig(base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2)
    async with LLMClient(cfg, sleep=NoSleep()) as client:
        with pytest.raises(ConnectError):
            await client.call(REQ)


async def test_metrics_scraped_over_http(upstream: tuple[str, Upstream]) -> None:
    base, _ = upstream
    metrics = IterateMetrics()
    async with LLMClient(IterateConfig(base_url=base + "/v1"), metrics=metrics) as client:
        rec = StageRecorder(metrics, None, "r1")
        async with rec.stage("llm_call"):
            await client.call(REQ)
    metrics.cache_requests.labels("memory", "miss").inc()
    metrics.token_guard_actions.labels("truncate").inc()
    server = await serve_metrics(metrics)
    try:
        assert server.port != 0
        async with httpx.AsyncClient() as http:
            resp = await http.get(server.url)
    finally:
        await server.stop()
    assert resp.status_code == 200
    assert resp.headers["content-type"] == CONTENT_TYPE_LATEST
    for name in METRIC_NAMES:
        assert f"# TYPE {name}" in resp.text or f"\n{name}" in resp.text, name
    assert 'iterate_stage_duration_seconds_count{stage="llm_call"} 1.0' in resp.text


def test_threaded_metrics_server_from_sync_code() -> None:
    metrics = IterateMetrics()
    metrics.retries.labels("429").inc(3)
    with ThreadedMetricsServer(metrics) as server:
        assert threading.active_count() >= 2
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            text = resp.read().decode()
    assert 'iterate_retries_total{reason="429"} 3.0' in text
    for name in METRIC_NAMES:
        assert name in text


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connection_dropped_mid_stream_is_stream_error(
    upstream: tuple[str, Upstream], transport: str
) -> None:
    from pytest_iterate.client.errors import StreamError

    base, _ = upstream
    cfg = IterateConfig(base_url=base + "/cut/v1", transport=transport, max_attempts=2)  # type: ignore[arg-type]
    async with LLMClient(cfg, sleep=NoSleep()) as client:
        with pytest.raises(StreamError):
            await client.call(REQ.replace(stream=True))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_stream_outlives_the_read_timeout_while_data_keeps_coming(
    upstream: tuple[str, Upstream], transport: str
) -> None:
    base, _ = upstream
    cfg = IterateConfig(
        base_url=base + "/drip/v1",
        transport=transport,  # type: ignore[arg-type]
        max_attempts=1,
        request_timeout_s=10.0,
        read_timeout_s=0.6,  # each gap is 0.2 s; the whole stream takes about 1 s
    )
    async with LLMClient(cfg) as client:
        resp = await client.call(REQ.replace(stream=True))
    assert resp.text == "".join(WORDS) + "!"
    assert resp.total_s > 0.6


@pytest.mark.parametrize(
    ("path", "timeouts", "match"),
    [
        # the whole attempt bounded by request_timeout_s (no read timeout)
        ("stall", {"request_timeout_s": 0.3}, None),
        # silence bounded by read_timeout_s: mid-stream, and before the status line
        ("stall", {"request_timeout_s": 10.0, "read_timeout_s": 0.3}, r"no data for 0\.3s .*read_timeout_s"),
        ("mute", {"request_timeout_s": 10.0, "read_timeout_s": 0.3}, r"no data for 0\.3s .*read_timeout_s"),
    ],
    ids=["stall-attempt-timeout", "stall-read-timeout", "mute-read-timeout"],
)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_silence_fails_fast_with_a_timeout_naming_the_bound(
    upstream: tuple[str, Upstream], transport: str, path: str, timeouts: dict[str, float], match: str | None
) -> None:
    from pytest_iterate.client.errors import RequestTimeout

    base, _ = upstream
    cfg = IterateConfig(
        base_url=f"{base}/{path}/v1",
        transport=transport,  # type: ignore[arg-type]
        max_attempts=1,
        **timeouts,  # type: ignore[arg-type]
    )
    async with LLMClient(cfg) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RequestTimeout, match=match):
            await client.call(REQ.replace(stream=path == "stall"))
        assert asyncio.get_running_loop().time() - started < 0.75


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_one_request_id_ties_the_retries_of_a_call_together(
    upstream: tuple[str, Upstream], transport: str
) -> None:
    base, state = upstream
    cfg = IterateConfig(base_url=base + "/flaky/v1", transport=transport, max_attempts=3)  # type: ignore[arg-type]
    async with LLMClient(cfg, sleep=NoSleep()) as client:
        first = await client.call(REQ)
        second = await client.call(REQ)
    assert first.attempts == second.attempts == 3 and first.text == second.text == "ok after 3"
    ids = state.request_ids
    assert len(ids) == 6 and len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1
    assert ids[0] != ids[3]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids)  # random hex


async def test_every_bare_attempt_gets_a_fresh_request_id(upstream: tuple[str, Upstream]) -> None:
    from pytest_iterate.client.errors import ServerError

    base, state = upstream
    async with LLMClient(IterateConfig(base_url=base + "/flaky/v1")) as client:
        for _ in range(2):
            with pytest.raises(ServerError):
                await client.raw_call(REQ)
    assert len(state.request_ids) == 2 and state.request_ids[0] != state.request_ids[1]
