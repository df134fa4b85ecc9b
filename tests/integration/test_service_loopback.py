"""serve-pipeline over loopback: the openai SDK, raw HTTP, a load test, the CLI.

The upstream is the project's mock on its own thread; the service runs in the test's loop
(``async with PipelineService``) or on a thread of its own (``start_in_thread``) for the
openai SDK's sync client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.digest import answer_digest, request_digest
from pytest_iterate.doubles.mock.profiles import load_profile
from pytest_iterate.doubles.mock.ratelimit import RateLimiter
from pytest_iterate.doubles.mock.server import MockServer
from pytest_iterate.harness.loads import ClosedLoop
from pytest_iterate.harness.runner import run_load
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path
from pytest_iterate.service.app import PipelineService

QUESTION = [{"role": "user", "content": "Task: a ring buffer"}]


def slow_profile(tmp_path: Path, seconds: float) -> Any:
    path = tmp_path / "slow.json"
    path.write_text(
        json.dumps(
            {
                "name": "slow",
                "ttft_base_s": {"dist": "fixed", "mean": seconds},
                "itl_s": {"dist": "fixed", "mean": 0.0},
                "output_tokens": {"dist": "fixed", "mean": 40},
                "capacity": 64,
                "context_window": 16384,
            }
        )
    )
    return load_profile(str(path))


@pytest.fixture
def upstream() -> Iterator[MockServer]:
    server = MockServer(MockLLM("fast")).start_in_thread()
    yield server
    server.stop()


def service_config(upstream: str, tmp_path: Path, **kw: Any) -> IterateConfig:
    values: dict[str, Any] = {"base_url": upstream, "cache_dir": str(tmp_path / "cache")}
    values.update(kw)
    return IterateConfig.load(values, environ={}, pyproject=None)


# -- the openai SDK ------------------------------------------------------------------------------


def test_the_openai_sdk_gets_cached_answers_on_repeats(upstream: MockServer, tmp_path: Path) -> None:
    service = PipelineService(service_config(upstream.base_url, tmp_path)).start_in_thread()
    try:
        client = openai.OpenAI(base_url=service.base_url, api_key="unused", max_retries=0)
        first = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=QUESTION, temperature=0, max_tokens=60
        )
        again = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=QUESTION, temperature=0, max_tokens=60
        )
        streamed = client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, temperature=0, max_tokens=60, stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
    finally:
        service.stop()
    answer = first.parse().choices[0].message.content
    body = {"model": "gpt-4o-mini", "messages": QUESTION, "temperature": 0, "max_tokens": 60}
    assert answer is not None and answer_digest(answer) == request_digest(body)  # the upstream's answer
    assert first.headers["x-iterate-cache"] == "miss" and again.headers["x-iterate-cache"] == "memory"
    assert again.parse().choices[0].message.content == answer and "".join(pieces) == answer
    assert upstream.core.stats.completions == 1  # the repeat and the stream came from the cache
    assert again.parse().model_extra is not None and again.parse().model_extra["iterate"]["cache"] == "memory"


async def test_the_openai_sdk_gets_a_503_with_retry_after_when_the_service_is_saturated(
    tmp_path: Path,
) -> None:
    server = MockServer(MockLLM(slow_profile(tmp_path, 0.5))).start_in_thread()
    try:
        cfg = service_config(
            server.base_url, tmp_path, max_concurrent_requests=1, max_queue=0, cache_enabled=False
        )
        async with PipelineService(cfg) as service:
            client = openai.AsyncOpenAI(base_url=service.base_url, api_key="unused", max_retries=0)
            holder = asyncio.ensure_future(
                client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=20)
            )
            while service.pipeline.client.throttle.inflight == 0:  # the one slot is taken
                await asyncio.sleep(0.005)
            with pytest.raises(openai.InternalServerError) as info:
                await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=20)
            busy_done = holder.done()
            # the SDK honours retry-after-ms: with retries on, the same request gets through
            patient = openai.AsyncOpenAI(base_url=service.base_url, api_key="unused", max_retries=50)
            late = await patient.chat.completions.create(
                model="gpt-4o-mini", messages=QUESTION, max_tokens=20
            )
            await holder
    finally:
        server.stop()
    response = info.value.response
    assert response.status_code == 503 and info.value.code == "busy"
    assert int(response.headers["retry-after"]) >= 1 and int(response.headers["retry-after-ms"]) >= 1
    assert not busy_done  # the busy answer came back while the slot was still held
    assert late.choices[0].message.content


# -- raw HTTP: errors, probes, metrics -------------------------------------------------------------


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, dict[str, Any], Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/chat/completions", b"{not json", 400, "could not parse the JSON"),
        ("/chat/completions", {"messages": "hi"}, 400, "'messages' must be a non-empty list"),
        (
            "/chat/completions",
            {"messages": [{"content": "x"}]},
            400,
            "messages[0] must be an object with a 'role'",
        ),
        ("/chat/completions", {"messages": QUESTION, "n": 2}, 400, "'n' must be 1"),
        (
            "/chat/completions",
            {"messages": QUESTION, "max_tokens": 0},
            400,
            "'max_tokens' must be a whole number",
        ),
        ("/chat/completions", {"messages": QUESTION, "stream": "yes"}, 400, "'stream' must be true or false"),
        ("/completions", {"prompt": 5}, 400, "'prompt' must be a string or a non-empty list"),
        ("/nowhere", {}, 404, "Unknown path"),
    ],
)
async def test_bad_requests_are_answered_with_an_openai_error_naming_the_field(
    upstream: MockServer, tmp_path: Path, path: str, body: Any, status: int, needle: str
) -> None:
    async with (
        PipelineService(service_config(upstream.base_url, tmp_path)) as service,
        aiohttp.ClientSession() as s,
    ):
        got, _, data = await post(s, service.base_url + path, body)
    assert got == status and needle in data["error"]["message"]
    assert upstream.core.stats.completions == 0


async def test_upstream_failures_map_to_gateway_statuses_and_overflow_to_400(tmp_path: Path) -> None:
    from pytest_iterate.doubles.mock.faults import FaultPlan

    server = MockServer(MockLLM("fast", faults=FaultPlan.parse(["503x9=1.0"]))).start_in_thread()
    try:
        cfg = service_config(
            server.base_url, tmp_path, max_attempts=2, backoff_initial_s=0.001, backoff_max_s=0.01
        )
        async with PipelineService(cfg) as service, aiohttp.ClientSession() as s:
            status, _, data = await post(s, service.base_url + "/chat/completions", {"messages": QUESTION})
        assert (
            status == 502
            and data["error"]["code"] == "upstream_error"
            and "HTTP 503" in data["error"]["message"]
        )
    finally:
        server.stop()
    small = MockServer(MockLLM("fast")).start_in_thread()
    try:
        cfg = service_config(small.base_url, tmp_path, token_policy="refuse", context_window=64)
        async with PipelineService(cfg) as service, aiohttp.ClientSession() as s:
            long = [{"role": "user", "content": "word " * 200}]
            status, _, data = await post(
                s, service.base_url + "/chat/completions", {"messages": long, "max_tokens": 8}
            )
        assert status == 400 and data["error"]["code"] == "context_length_exceeded"
        assert small.core.stats.completions == 0  # refused before anything was sent
    finally:
        small.stop()


async def test_health_models_and_metrics(upstream: MockServer, tmp_path: Path) -> None:
    async with (
        PipelineService(service_config(upstream.base_url, tmp_path)) as service,
        aiohttp.ClientSession() as s,
    ):
        for _ in range(2):
            await post(s, service.base_url + "/chat/completions", {"messages": QUESTION, "temperature": 0})
        await post(s, service.base_url + "/chat/completions", {"messages": []})
        async with s.get(service.url + "/health") as resp:
            health = await resp.json()
        async with s.get(service.base_url + "/models") as resp:
            models = await resp.json()
        async with s.get(service.url + "/metrics") as resp:
            text = await resp.text()
    assert health["status"] == "ok" and health["upstream"] == upstream.base_url and health["inflight"] == 0
    assert [m["id"] for m in models["data"]] == ["gpt-4o-mini"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("iterate_service_responses_total", (("route", "chat"), ("status", "200")))] == 2
    assert samples[("iterate_service_responses_total", (("route", "chat"), ("status", "400")))] == 1
    assert samples[("iterate_cache_requests_total", (("result", "hit"), ("tier", "memory")))] == 1
    assert samples[("iterate_requests_total", (("model", "gpt-4o-mini"), ("outcome", "ok")))] == 1


# -- a load test over loopback -------------------------------------------------------------------


async def test_a_load_test_through_the_service_paced_to_the_upstreams_rate_limit(tmp_path: Path) -> None:
    """300 requests at concurrency 16 through the service to a rate-limited upstream: every
    one answered, duplicates from the cache, the upstream's limit kept (at most one 429)."""
    items = load_workload(standard_workload_path())
    builder = PromptBuilder()
    # 60 requests a second, 20 of them left: the unique designs need pacing over ~1 s
    limiter = RateLimiter(requests_per_min=3600, tokens_per_min=10**7, used_requests=3580)
    server = MockServer(MockLLM("fast", rate_limit=limiter)).start_in_thread()
    try:
        cfg = service_config(server.base_url, tmp_path, max_concurrent_requests=16)
        async with PipelineService(cfg) as service, aiohttp.ClientSession() as session:
            url = service.base_url + "/chat/completions"

            async def send(design: Any) -> None:
                status, _, data = await post(session, url, builder.build(design).body("gpt-4o-mini"))
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {data}")

            run = await run_load(send, items, ClosedLoop(16), requests=300)
            hits = service.pipeline.metrics.registry.get_sample_value(
                "iterate_cache_requests_total", {"tier": "memory", "result": "hit"}
            )
            assert service.pipeline.services.cache is not None
            joined = service.pipeline.services.cache.single_flight.coalesced
    finally:
        server.stop()
    summary = run.summary("service")
    assert summary.errors == 0 and summary.requests == 300
    # the pacing's promise: at most one 429 per limit window (none on an idle machine; a loaded
    # one can delay a send past its slot by a refill interval)
    assert server.core.stats.statuses.get(429, 0) <= 1
    # the 70 unique designs reached the upstream (attempts counted per client request id, so the
    # retry after an allowed 429 is not a second request); the rest came from the cache
    assert server.core.stats.logical_requests == 70
    # the duplicates were answered without a call (70 logical requests above): from the memory
    # tier, or (on a slow box, when the first copy is still in flight) by joining that call; a
    # rare few find the answer on the re-check inside the flight, which counts as neither
    assert hits is not None and 300 - 70 - 10 <= hits + joined <= 300 - 70


# -- the CLI ----------------------------------------------------------------------------------


def test_serve_pipeline_prints_its_url_serves_and_stops_on_sigterm(
    upstream: MockServer, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITERATE")}
    cmd = [
        sys.executable,
        "-m",
        "pytest_iterate.harness.cli",
        "serve-pipeline",
        "--upstream",
        upstream.base_url,
        "--port",
        "0",
        "--cache-dir",
        str(tmp_path / "c"),
        "--max-queue",
        "4",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:") and base.endswith("/v1")
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0)
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, temperature=0)
        assert answer.choices[0].message.content
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_pipeline_names_a_bad_option_and_exits_2(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest_iterate.harness.cli", "serve-pipeline", "--upstream", "ftp://x"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "serve-pipeline: --upstream: 'ftp://x' is not an http(s):// URL" in done.stderr


def test_start_in_thread_refuses_a_pipeline_from_another_loop(tmp_path: Path) -> None:
    from pytest_iterate.pipeline.runner import Pipeline

    cfg = service_config("http://127.0.0.1:9/v1", tmp_path)
    with pytest.raises(RuntimeError, match="belongs to its own loop"):
        PipelineService(cfg, pipeline=Pipeline(cfg)).start_in_thread()
    time.sleep(0)
