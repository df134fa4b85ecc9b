"""Against the real llama.cpp server with SmolLM2-135M (``scripts/real_endpoint.sh``).

Marked ``real``. The ``real_endpoint`` fixture uses ``ITERATE_REAL_URL`` when set (it
must answer), else starts the server with the script (and stops it afterwards if it
started it); it skips with the reason when the server is not installed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.secret import Secret
from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport
from pytest_iterate.client.transport.base import TransportResponse
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.runner import Pipeline
from pytest_iterate.pipeline.workload import (
    load_workload,
    long_context_workload_path,
    standard_workload_path,
)

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "real_endpoint.sh"
MODEL = "smollm2"
N_CTX = 2048  # what scripts/real_endpoint.sh passes as --n_ctx


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=10) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _script(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _server_running() -> bool:
    """True when the script's pid file names a live process (a busy server answers late)."""
    try:
        os.kill(int((ROOT / ".real_endpoint" / "server.pid").read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def real_endpoint() -> Iterator[str]:
    """The base URL (``http://127.0.0.1:PORT/v1``) of a running SmolLM2 server."""
    url = os.environ.get("ITERATE_REAL_URL")
    if url:
        if not _answers(url):
            pytest.fail(f"ITERATE_REAL_URL={url} is set but {url}/models does not answer")
        yield url.rstrip("/")
        return
    url = _script("url", 10).stdout.strip()
    if _server_running() or _answers(url):  # someone else's server: use it, never stop it
        started = _script("start", 180)  # waits until it answers (a busy server answers late)
        if started.returncode != 0:
            pytest.fail(f"the real endpoint at {url} does not answer: {started.stderr.strip()[-300:]}")
        yield url
        return
    started = _script("start", 180)
    if started.returncode != 0:
        pytest.skip(
            "no real endpoint: ITERATE_REAL_URL is unset and `scripts/real_endpoint.sh start` failed "
            f"(run `scripts/real_endpoint.sh install` first): {started.stderr.strip()[-300:]}"
        )
    try:
        yield started.stdout.strip().splitlines()[-1]
    finally:
        _script("stop", 60)


class CountingTransport:
    """Counts what reaches the server and the statuses it answers with."""

    def __init__(self) -> None:
        self.inner = AiohttpTransport()
        self.sends = 0
        self.statuses: list[int] = []

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        json_body: Any | None,
        timeout_s: float,
        auth: Secret | None = None,
    ) -> TransportResponse:
        self.sends += 1
        resp = await self.inner.send(
            method, url, headers=headers, json_body=json_body, timeout_s=timeout_s, auth=auth
        )
        self.statuses.append(resp.status)
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


def _config(base_url: str, tmp_path: Path, **changes: Any) -> IterateConfig:
    return IterateConfig(
        base_url=base_url,
        model=MODEL,
        request_timeout_s=180.0,  # 2 shared cores: a long prompt takes a while
        max_concurrent_requests=1,
        cache_dir=str(tmp_path / "cache"),
        context_window=N_CTX,
        **changes,
    )


def _small(designs: list[DesignRequest], max_tokens: int) -> list[DesignRequest]:
    return [dataclasses.replace(d, max_tokens=max_tokens) for d in designs]


REQ = LLMRequest(
    messages=({"role": "user", "content": "Write a Python function that adds two numbers."},),
    max_tokens=24,
    params={"temperature": 0},
)


async def test_non_streaming_call_reports_usage(real_endpoint: str, tmp_path: Path) -> None:
    async with LLMClient(_config(real_endpoint, tmp_path)) as client:
        r = await client.call(REQ)
    assert r.text.strip()
    assert r.finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens > 10
    assert 1 <= r.usage.completion_tokens <= 24
    assert r.model == MODEL
    assert r.ttft_s is not None and 0 < r.ttft_s <= r.total_s


async def test_streaming_call_records_ttft_and_chunks(real_endpoint: str, tmp_path: Path) -> None:
    deltas: list[str] = []
    async with LLMClient(_config(real_endpoint, tmp_path)) as client:
        stream = client.stream(REQ)
        async for delta in stream:
            deltas.append(delta)
    r = stream.response
    assert r is not None and r.text.strip()
    assert "".join(deltas) == r.text == "".join(r.chunks)
    assert len(r.chunks) >= 2  # token by token
    assert r.ttft_s is not None and 0 < r.ttft_s < r.total_s
    assert r.chunk_times_s == sorted(r.chunk_times_s)
    assert r.finish_reason in ("stop", "length")


SHORT = [
    "What is 2+2? Reply with just the number.",
    "Reply with one word: what colour is the sky?",
    "Translate 'hello' to French. Reply with one word.",
]


async def test_cached_second_run_makes_no_server_call(real_endpoint: str, tmp_path: Path) -> None:
    """Answers that end by themselves (partial ones are never cached) come from disk the 2nd time."""
    from pytest_iterate.cache.layer import CachingCaller
    from pytest_iterate.cache.tiered import ResponseCache

    cfg = _config(real_endpoint, tmp_path)
    requests = [
        LLMRequest(messages=({"role": "user", "content": q},), max_tokens=48, params={"temperature": 0})
        for q in SHORT
    ]
    counting = CountingTransport()
    runs: list[list[Any]] = []
    try:
        for _ in range(2):  # each run: a new client and cache object (empty memory tier), one folder
            cache = ResponseCache(cfg)
            try:
                async with LLMClient(cfg, transport=counting) as client:
                    caller = CachingCaller(client.call, cache, base_url=client.base_url, default_model=MODEL)
                    runs.append([await caller(r) for r in requests])
            finally:
                cache.close()
            if len(runs) == 1:
                assert counting.sends == 3 and counting.statuses == [200, 200, 200]
                assert all(r.finish_reason == "stop" and r.cache_tier is None for r in runs[0])
    finally:
        await counting.aclose()
    first, second = runs
    assert counting.sends == 3  # the second run made no server call
    assert [r.cache_tier for r in second] == ["disk"] * 3
    assert [r.text for r in second] == [r.text for r in first]
    assert [r.usage for r in second] == [r.usage for r in first]


async def test_long_context_workload_never_overflows_the_server_window(
    real_endpoint: str, tmp_path: Path
) -> None:
    """SmolLM2's tokenizer is not cl100k: the guard learns the ratio and never sends too much."""
    cfg = _config(real_endpoint, tmp_path, cache_enabled=False, token_policy="truncate")
    counting = CountingTransport()
    warmup = _small(load_workload(standard_workload_path())[:1], 16)
    long_designs = _small(load_workload(long_context_workload_path()), 24)
    try:
        async with Pipeline.from_config(cfg, client=LLMClient(cfg, transport=counting)) as pipeline:
            learner = pipeline.guard.learner
            (warm,) = await pipeline.run_many(warmup, concurrency=1)
            assert warm.ok, warm.error
            assert learner.ratio(pipeline.services.base_url) > 1.0 + cfg.token_safety_margin  # learned
            results = await pipeline.run_many(long_designs, concurrency=1)
    finally:
        await counting.aclose()
    assert 400 not in counting.statuses, counting.statuses  # never context_length_exceeded
    assert all(r.ok for r in results), [repr(r.error) for r in results if not r.ok]
    for r in results:
        assert r.usage is not None and r.usage.prompt_tokens + 24 <= N_CTX
        assert r.partial and any(w.action in ("truncate", "split") for w in r.warnings)
    assert counting.sends == 1 + sum(r.llm_calls for r in results)
