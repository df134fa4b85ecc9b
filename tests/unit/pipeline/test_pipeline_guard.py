"""The long-context workload through the pipeline with the real TokenGuard and a window-enforcing endpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ContextOverflow
from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL
from pytest_iterate.pipeline.runner import Pipeline
from pytest_iterate.pipeline.workload import load_workload, long_context_workload_path
from pytest_iterate.tokens.counter import TokenCounter
from pytest_iterate.tokens.guard import TokenGuard

WINDOW = 2048


class WindowedEndpoint:
    """Answers 400 context_length_exceeded when (ratio x our count) + max_tokens exceeds the window."""

    def __init__(self, ratio: float = 1.0) -> None:
        self.ratio = ratio
        self.counter = TokenCounter()
        self.accepted: list[int] = []
        self.rejected = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = int(self.counter.count_messages(body["messages"]) * self.ratio)
        if prompt + body["max_tokens"] > WINDOW:
            self.rejected += 1
            message = (
                f"This model's maximum context length is {WINDOW} tokens. However, you requested "
                f"{prompt + body['max_tokens']} tokens ({prompt} in the messages, {body['max_tokens']} in "
                "the completion). Please reduce the length of the messages or completion."
            )
            error = {"message": message, "type": "invalid_request_error", "code": "context_length_exceeded"}
            return httpx.Response(400, json={"error": error})
        self.accepted.append(prompt + body["max_tokens"])
        text = "```python\ndef design():\n    return 1\n```"
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 12},
            },
        )


def make(policy: str) -> IterateConfig:
    cfg = IterateConfig.load(
        {
            "context_window": WINDOW,
            "token_policy": policy,
            "cache_enabled": False,
            "max_attempts": 1,
            "base_url": MOCK_BASE_URL,
            "transport": "httpx",
        },
        environ={},
        pyproject=None,
    )
    return cfg


@pytest.fixture
def router() -> Any:
    with respx.mock(base_url=MOCK_BASE_URL, assert_all_called=False) as r:
        yield r


async def test_workload_really_overflows_unguarded(router: respx.MockRouter, tmp_path: Path) -> None:
    endpoint = WindowedEndpoint()
    router.post("/chat/completions").mock(side_effect=endpoint)
    cfg = make("truncate")
    async with Pipeline(cfg) as pipeline:  # no guard
        results = await pipeline.run_many(load_workload(long_context_workload_path()))
    assert not any(r.ok for r in results) and endpoint.accepted == []


@pytest.mark.parametrize("policy", ["truncate", "split"])
async def test_guarded_requests_fit_and_are_flagged(
    router: respx.MockRouter, tmp_path: Path, policy: str
) -> None:
    endpoint = WindowedEndpoint()
    router.post("/chat/completions").mock(side_effect=endpoint)
    cfg = make(policy)
    workload = load_workload(long_context_workload_path())
    async with Pipeline.from_config(cfg) as pipeline:
        results = await pipeline.run_many(workload)
        rows = await pipeline.store.rows()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert endpoint.rejected == 0 and max(endpoint.accepted) <= WINDOW
    for r in results:
        assert r.partial and not r.complete
        assert policy in {w.action for w in r.warnings}
        assert r.artifact is not None and r.artifact.valid is True
    if policy == "split":
        assert all(r.llm_calls >= 2 for r in results)
        assert len(endpoint.accepted) == sum(r.llm_calls for r in results)
    assert len(rows) == len(workload) and all(row["warnings"] for row in rows)


async def test_refuse_policy_fails_fast_without_calls(router: respx.MockRouter, tmp_path: Path) -> None:
    endpoint = WindowedEndpoint()
    router.post("/chat/completions").mock(side_effect=endpoint)
    cfg = make("refuse")
    async with Pipeline.from_config(cfg) as pipeline:
        results = await pipeline.run_many(load_workload(long_context_workload_path()))
    assert all(isinstance(r.error, ContextOverflow) for r in results)
    assert endpoint.accepted == [] and endpoint.rejected == 0
    assert all(r.stages[-1].name == "token_guard" for r in results)


async def test_server_counting_more_tokens_is_learned_after_one_400(
    router: respx.MockRouter, tmp_path: Path
) -> None:
    endpoint = WindowedEndpoint(ratio=1.3)  # a tokenizer that counts 30 % more than cl100k
    router.post("/chat/completions").mock(side_effect=endpoint)
    cfg = make("truncate")
    guard = TokenGuard(cfg)
    workload = load_workload(long_context_workload_path())
    async with Pipeline(cfg, guard=guard) as pipeline:
        first = await pipeline.run(workload[0])
        rest = await pipeline.run_many(workload[1:], concurrency=1)
    assert first.ok, first.error
    assert first.llm_calls == 2 and endpoint.rejected == 1  # one 400, then a fitting retry
    assert all(r.ok and r.llm_calls == 1 for r in rest)  # learned: no more 400s
    assert endpoint.rejected == 1 and max(endpoint.accepted) <= WINDOW
