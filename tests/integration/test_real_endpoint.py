"""Against the real llama.cpp server with SmolLM2-135M (``scripts/real_endpoint.sh``).

Marked ``real``. The ``real_endpoint`` fixture uses ``ITERATE_REAL_URL`` when set (it
must answer), else starts the server with the script (and stops it afterwards if it
started it); it skips with the reason when the server is not installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
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
)
from pytest_iterate.tokens import GuardingCaller, TokenGuard
from pytest_iterate.tokens.guard import request_texts

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
    """Counts what reaches the server and the statuses it answers with (every attempt, before
    any retry), per URL path."""

    def __init__(self) -> None:
        self.inner = AiohttpTransport()
        self.sends = 0
        self.statuses: list[int] = []
        self.calls: list[tuple[str, str, int]] = []  # (method, path, status)

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
        self.calls.append((method, "/" + url.split("://", 1)[-1].split("/", 1)[-1], resp.status))
        return resp

    def completions(self) -> list[int]:
        """Statuses of the completion requests only (not the guard's probe or tokenize calls)."""
        return [status for _, path, status in self.calls if path.endswith("completions")]

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


SCRIPTS_WORKLOAD = ROOT / "fixtures" / "workloads" / "long_context_scripts.jsonl"
REPORTS = ROOT / "reports" / "real"


def _unseen_designs(seed: int, n: int = 6) -> list[DesignRequest]:
    """Long requests nobody tuned for: random Latin words, random CJK characters (common and
    rare), random emoji, numbers and Cyrillic in random proportions."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 11)))

    pools = {
        "latin": lambda: " ".join(word() for _ in range(rng.randint(3, 12))) + ". ",
        "cjk": lambda: "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(5, 30))) + "。",
        "emoji": lambda: " ".join(chr(rng.randint(0x1F300, 0x1F5FF)) for _ in range(rng.randint(2, 8))) + " ",
        "digits": lambda: " ".join(
            str(rng.getrandbits(rng.randint(8, 40))) for _ in range(rng.randint(2, 6))
        ),
        "cyrillic": lambda: (
            " ".join(
                "".join(chr(rng.randint(0x430, 0x44F)) for _ in range(rng.randint(3, 9))) for _ in range(5)
            )
            + ". "
        ),
    }
    designs = []
    for i in range(n):
        weights = {k: rng.random() ** 2 for k in pools}
        text = ""
        while len(text) < rng.randint(4000, 9000):
            text += pools[rng.choices(list(weights), weights=list(weights.values()))[0]]()
        designs.append(
            DesignRequest(
                id=f"unseen-{seed}-{i}",
                title="Implement what this text specifies",
                requirements=(text,),
                max_tokens=24,
            )
        )
    return designs


@pytest.mark.parametrize("counting", ["auto", "estimate"])
async def test_long_context_in_several_scripts_never_hits_the_window(
    real_endpoint: str, tmp_path: Path, counting: str
) -> None:
    """SmolLM2's tokenizer is not cl100k: with exact counts (auto: llama-cpp-python's tokenize
    route) or the per-script bound alone (estimate), no request is refused for length.

    Long workloads in English, Chinese, code, emoji and mixed text, plus random text nobody
    tuned for; max_tokens 24 keeps every prompt as close to the 2,048-token window as the
    guard dares. The 400s are counted at the transport, every attempt, before any retry.
    """
    cfg = _config(
        real_endpoint, tmp_path, cache_enabled=False, token_policy="truncate", token_counting=counting
    )
    counting_transport = CountingTransport()
    designs = _small(
        load_workload(SCRIPTS_WORKLOAD)
        + load_workload(long_context_workload_path())
        + _unseen_designs(20261130),
        24,
    )
    try:
        async with Pipeline.from_config(cfg, client=LLMClient(cfg, transport=counting_transport)) as pipeline:
            results = await pipeline.run_many(designs, concurrency=2)
            guarding = pipeline.services.guard
            assert guarding is not None and guarding.tokens is not None
            info = guarding.tokens.info
            server = guarding.tokens.server
    finally:
        await counting_transport.aclose()
    refused = [s for s in counting_transport.completions() if s == 400]
    errors = [f"{r.request_id}: {r.error!r}" for r in results if not r.ok]
    summary = {
        "counting": counting,
        "endpoint": info.describe() if info is not None else None,
        "probe_s": round(info.probe_s, 4) if info is not None else None,
        "requests": len(results),
        "completion_requests": len(counting_transport.completions()),
        "refused_for_length_before_retry": len(refused),
        "failed": len(errors),
        "truncated": sum(1 for r in results if any(w.action == "truncate" for w in r.warnings)),
        "complete_or_flagged": sum(1 for r in results if r.complete or r.partial),
        "tokenize_calls": server.calls if server is not None else 0,
        "largest_prompt_plus_max_tokens": max(
            (r.usage.prompt_tokens + 24 for r in results if r.usage), default=0
        ),
        "token_guard_stage_ms_mean": round(
            1000
            * sum(t.duration_s for r in results for t in r.stages if t.name == "token_guard")
            / len(results),
            2,
        ),
    }
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"token-guard-{counting}.json").write_text(json.dumps(summary, indent=2) + "\n")
    assert refused == [], summary  # no request refused for length, not even once before a retry
    assert errors == [], errors
    assert summary["complete_or_flagged"] == len(results)
    for r in results:
        assert r.usage is not None and r.usage.prompt_tokens + 24 <= N_CTX, r.request_id
    if counting == "auto":
        assert (
            info is not None and info.kind == "llama-cpp-python" and server is not None and server.calls > 0
        )
    else:
        assert {path for _, path, _ in counting_transport.calls} == {"/v1/chat/completions"}  # never probed


async def test_the_guard_counts_what_the_server_counts(real_endpoint: str, tmp_path: Path) -> None:
    """After one answer teaches the chat template's overhead, a prompt's bound is the server's count."""
    cfg = _config(real_endpoint, tmp_path, cache_enabled=False)
    texts = [
        "Write a function that parses ISO 8601 timestamps and rejects anything else.",
        "每个操作都会校验参数，遇到错误输入时抛出有文档说明的异常。状态变化记录在只追加的日志中。",  # noqa: RUF001
        "✅ build passed 🎉 — deploy 🚀 to staging 🌍 at 10:42 ⏱️ 👩‍💻 reviewed the PR 👍",
        "def retry(fn, attempts=3):\n    for i in range(attempts):\n        try:\n            return fn()\n",
        "Каждая операция проверяет аргументы: 1048576 bytes, 2026-11-30T12:00:00Z.",
    ]

    def request(text: str) -> LLMRequest:
        messages = ({"role": "system", "content": "You are terse."}, {"role": "user", "content": text})
        return LLMRequest(messages=messages, max_tokens=4, params={"temperature": 0})

    async with LLMClient(cfg) as client:
        guard = TokenGuard(cfg)
        caller = GuardingCaller.for_client(client, guard)
        server = await caller.server()
        assert server is not None
        await server.count_many(request_texts(request(texts[0])))
        await caller(request(texts[0]))  # its usage teaches the template's overhead
        for text in texts[1:]:
            await server.count_many(request_texts(request(text)))
            decision = guard.check(request(text), endpoint_key=client.base_url, server=server)
            response = await caller(request(text))
            assert response.usage is not None and decision.exact, text
            served = response.usage.prompt_tokens
            assert served <= decision.estimated_prompt_tokens <= served + 2, (text, served, decision)
