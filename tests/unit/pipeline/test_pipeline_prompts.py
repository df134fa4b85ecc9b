"""Prompt builder: deterministic pieces built and counted once, cacheable requests."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.workers import WorkerPool
from pytest_iterate.tokens.counter import TokenCounter


class CountingCounter(TokenCounter):
    """The token guard's counter, recording every text it really encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def encode(self, text: str) -> list[int]:
        self.calls.append(text)
        return super().encode(text)


def design(**kw: object) -> DesignRequest:
    base: dict[str, object] = {"id": "d", "title": "Write a queue", "requirements": ("fifo", "bounded")}
    base.update(kw)
    return DesignRequest(**base)  # type: ignore[arg-type]


def test_request_is_deterministic_and_uses_defaults() -> None:
    b = PromptBuilder(default_max_tokens=300)
    r1, r2 = b.build(design()), b.build(design(id="other"))
    assert r1 == r2 and r1.deterministic and r1.endpoint == "chat" and r1.max_tokens == 300
    assert b.build(design(max_tokens=64)).max_tokens == 64
    user = r1.messages[1]["content"]
    assert "Write a queue" in user and "- fifo" in user and "Constraints" not in user
    assert "Constraints:\n- stdlib" in b.build(design(constraints=("stdlib",))).messages[1]["content"]


def test_system_message_built_once_per_language() -> None:
    b = PromptBuilder()
    assert b.build(design()).messages[0] is b.build(design(title="x")).messages[0]
    go = b.build(design(language="go")).messages[0]
    assert "```go" in go["content"] and go is not b.system_message("python")


def test_system_prompt_counted_once_user_counted_each_time() -> None:
    counter = CountingCounter()
    b = PromptBuilder(counter=counter)
    system = b.system_message("python")["content"]
    totals = [b.count_prompt(b.build(design(title=f"task {i}"))) for i in range(5)]
    assert counter.calls.count(system) == 1
    assert sum(1 for c in counter.calls if c.startswith("Task:")) == 5
    assert len(set(totals)) == 1 and totals[0] > 6


def test_default_counter_counts_real_tokens() -> None:
    b = PromptBuilder()
    assert 60 < b.count_prompt(b.build(design())) < 200


async def test_worker_pool_is_bounded_and_off_loop() -> None:
    pool = WorkerPool(2)
    loop_thread = threading.current_thread().name

    def work(i: int) -> str:
        time.sleep(0.02)
        return f"{i}:{threading.current_thread().name}"

    results = await asyncio.gather(*(pool.run(work, i) for i in range(6)))
    pool.close()
    assert [r.split(":")[0] for r in results] == [str(i) for i in range(6)]
    assert all(loop_thread not in r for r in results)
    assert pool.max_active == 2
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(work, 0)


def test_worker_pool_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="size"):
        WorkerPool(0)
    with pytest.raises(ValueError, match="kind"):
        WorkerPool(1, kind="fiber")  # type: ignore[arg-type]


async def test_process_pool_option_runs_the_extractor() -> None:
    from pytest_iterate.pipeline.extract import extract_artifact

    pool = WorkerPool(1, kind="process")
    try:
        artifact = await pool.run(extract_artifact, "```python\ndef f(:\n```", "python")
    finally:
        await pool.aclose()
    assert artifact.valid is False and artifact.syntax_error_line == 1
