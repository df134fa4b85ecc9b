"""The mock endpoint over loopback HTTP: the official openai SDK, our client, /metrics, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.profiles import Distribution, LatencyProfile
from pytest_iterate.doubles.mock.server import MockServer

openai = pytest.importorskip("openai")
MSG = [{"role": "user", "content": "Task: Build a trie\nLanguage: python"}]


async def test_openai_sdk_chat_stream_and_its_own_429_retries() -> None:
    core = MockLLM("fast", seed=2, faults=FaultPlan(script={3: "429ms", 4: "429ms"}, retry_after_s=0.01))
    async with MockServer(core) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test-not-real", max_retries=3)
        try:
            chat = await client.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=200)
            text = chat.choices[0].message.content
            assert text and text.startswith("## Build a trie") and "```python" in text
            assert chat.usage is not None and chat.usage.completion_tokens > 0

            stream = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MSG,
                max_tokens=200,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts, usage = [], None
            async for chunk in stream:
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                if chunk.usage is not None:
                    usage = chunk.usage
            assert "".join(parts) == text
            assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens

            retried = await client.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=200)
            assert retried.choices[0].message.content == text
            models = await client.models.list()
            assert "gpt-4o-mini" in [m.id for m in models.data]
        finally:
            await client.close()
    # the SDK saw two 429s and retried on its own: the server counted 5 completion requests
    assert core.stats.completions == 5
    assert core.stats.faults == {"429ms": 2}
    assert core.stats.statuses[429] == 2


def test_openai_sync_sdk_against_a_server_in_a_thread() -> None:
    server = MockServer(MockLLM("fast")).start_in_thread()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-not-real", max_retries=0)
        out = client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt=["Task: a", "Task: b"], max_tokens=100
        )
        assert [c.index for c in out.choices] == [0, 1]
        assert out.choices[1].text.startswith("## b")
        client.close()
    finally:
        server.stop()
    assert server.core.stats.completions == 1


async def test_streamed_chunks_really_arrive_spaced_by_the_inter_token_latency() -> None:
    profile = LatencyProfile(
        "slowish",
        ttft_base=Distribution("fixed", 0.05),
        itl=Distribution("fixed", 0.005),
        output_tokens=Distribution("fixed", 60),
    )
    async with MockServer(MockLLM(profile)) as server, aiohttp.ClientSession() as http:
        body = {"model": "gpt-4o-mini", "messages": MSG, "stream": True}
        t0 = time.monotonic()
        times = []
        async with http.post(server.base_url + "/chat/completions", json=body) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for line in resp.content:
                if line.startswith(b"data: {"):
                    times.append(time.monotonic() - t0)
        n = len(times) - 1  # the last data event is the finish chunk
        assert times[0] >= 0.045  # TTFT
        assert times[-1] - times[0] >= 0.005 * (n - 2) * 0.9  # spread over the tokens, not one burst


@pytest.mark.parametrize("kind", ["reset", "hang", "stream_cut", "malformed_json", "503"])
async def test_our_client_over_aiohttp_retries_server_faults(kind: str) -> None:
    core = MockLLM("fast", faults=FaultPlan(script={1: kind}))
    async with MockServer(core) as server:
        cfg = IterateConfig(
            base_url=server.base_url,
            request_timeout_s=0.5,
            max_attempts=3,
            backoff_initial_s=0.01,
            backoff_max_s=0.02,
        )
        async with LLMClient(cfg, metrics=IterateMetrics()) as client:
            resp = await client.call(
                LLMRequest(messages=tuple(MSG), max_tokens=200, stream=kind == "stream_cut")
            )
    assert resp.attempts == 2 and resp.text.startswith("## Build a trie")
    assert core.stats.faults == {kind: 1}


async def test_metrics_endpoint_scraped_over_http() -> None:
    core = MockLLM("fast", faults=FaultPlan(script={2: "503"}))
    async with MockServer(core) as server, aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.post(server.base_url + "/chat/completions", json={"messages": MSG}) as r:
                await r.read()
        async with http.get(server.url + "/metrics") as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/plain")
            text = await r.text()
    assert 'mock_requests_total{route="chat",status="200"} 2.0' in text
    assert 'mock_requests_total{route="chat",status="503"} 1.0' in text
    assert 'mock_faults_total{kind="503"} 1.0' in text
    assert "mock_concurrent_requests" in text and "mock_tokens_total" in text


def test_cli_prints_its_url_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_iterate.doubles.mock.cli",
            "--profile",
            "fast",
            "--port",
            "0",
            "--seed",
            "1",
            "--fault",
            "429=0.0",
            "--fault",
            "503=0.0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")

        async def ask() -> dict:
            async with (
                aiohttp.ClientSession() as http,
                http.post(url + "/chat/completions", json={"messages": MSG}) as r,
            ):
                return json.loads(await r.read())

        assert asyncio.run(ask())["object"] == "chat.completion"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
    assert rc == 0


def test_cli_rejects_a_bad_fault_in_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest_iterate.doubles.mock.cli", "--fault", "418=0.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "unknown fault kind '418'" in out.stderr


async def test_probes_over_http_health_version_models() -> None:
    from importlib.metadata import version

    async with MockServer(MockLLM("fast")) as server, aiohttp.ClientSession() as http:
        async with http.get(server.url + "/health") as r:
            assert r.status == 200 and await r.json() == {"status": "ok"}
        async with http.head(server.url + "/health") as r:
            assert r.status == 200
        async with http.get(server.url + "/version") as r:
            assert r.status == 200 and await r.json() == {"version": version("pytest-iterate")}
        async with http.get(server.base_url + "/models") as r:
            assert r.status == 200 and "gpt-4o-mini" in [m["id"] for m in (await r.json())["data"]]
    assert server.core.stats.routes == {"health": 2, "version": 1, "models": 1}


def test_openai_sdk_with_its_default_settings_probes_the_loopback_server() -> None:
    from importlib.metadata import version

    import httpx

    server = MockServer(MockLLM("fast")).start_in_thread()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test-not-real")  # defaults otherwise
        try:
            assert "gpt-4o-mini" in [m.id for m in client.models.list()]
            assert client.models.retrieve("gpt-4o").id == "gpt-4o"
            with pytest.raises(openai.NotFoundError, match="model 'nope' does not exist"):
                client.models.retrieve("nope")
            health = client.get(server.url + "/health", cast_to=httpx.Response)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            under_base = client.get("/health", cast_to=httpx.Response)  # the SDK joins it to /v1
            assert under_base.json() == {"status": "ok"}
            ver = client.get(server.url + "/version", cast_to=httpx.Response)
            assert ver.json()["version"] == version("pytest-iterate")
        finally:
            client.close()
    finally:
        server.stop()
    # the 404 is not retried by the SDK: exactly one request per call
    assert server.core.stats.routes == {"models": 3, "health": 2, "version": 1}


async def test_attempts_per_request_id_over_http() -> None:
    core = MockLLM("fast", faults=FaultPlan(script={1: "503"}))
    async with MockServer(core) as server, aiohttp.ClientSession() as http:
        statuses = []
        for rid in ("call-1", "call-1", "call-2"):
            headers = {"X-Client-Request-Id": rid}
            async with http.post(
                server.base_url + "/chat/completions", json={"messages": MSG}, headers=headers
            ) as r:
                statuses.append(r.status)
                await r.read()
    assert statuses == [503, 200, 200]
    assert core.attempts("call-1") == 2 and core.attempts("call-2") == 1
    assert core.stats.logical_requests == 2 and core.stats.max_attempts == 2
