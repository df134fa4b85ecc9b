"""GuardingCaller.for_client over real HTTP: a server with another tokenizer never gets a prompt
over its window, counted exactly where it offers a tokenize route, estimated per script where not."""

# ruff: noqa: RUF001  (texts in many scripts on purpose: full-width commas, Greek, Arabic)

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.foreign import ForeignServer, ForeignTokenizer
from pytest_iterate.pipeline.runner import Pipeline
from pytest_iterate.pipeline.workload import load_workload, long_context_workload_path
from pytest_iterate.tokens import SCRIPTS, GuardingCaller, ScriptLearner, TokenCounter, TokenGuard

StartForeign = Callable[..., Awaitable[ForeignServer]]  # the ``foreign`` fixture (conftest.py)
COUNTER = TokenCounter()
FOREIGN = ForeignTokenizer()

ENGLISH = "Every operation validates its arguments and raises a documented exception on bad input. "
CHINESE = "每个操作都会校验参数，遇到错误输入时抛出有文档说明的异常。状态变化记录在只追加的日志中。"
CODE = "def retry(fn, attempts=3):\n    for i in range(attempts):\n        try:\n            return fn()\n"
EMOJI = "✅ build passed 🎉 — deploy 🚀 to staging 🌍 at 10:42 ⏱️ 👩‍💻 reviewed 👍 "
MIXED = ENGLISH[:40] + CHINESE[:20] + CODE[:40] + EMOJI[:20] + "Каждая операция проверяет аргументы. "
SCRIPT_TEXTS = {"english": ENGLISH, "chinese": CHINESE, "code": CODE, "emoji": EMOJI, "mixed": MIXED}


def long_request(text: str, repeat: int, *, max_tokens: int = 256) -> LLMRequest:
    messages = (
        {"role": "system", "content": "You write small, typed Python modules."},
        {"role": "user", "content": "Implement this specification:\n" + text * repeat},
    )
    return LLMRequest(messages=messages, max_tokens=max_tokens, params={"temperature": 0})


def config(server: ForeignServer, **changes: Any) -> IterateConfig:
    return IterateConfig(**{"base_url": server.base_url, "model": "foreign", "max_attempts": 1, **changes})


def assert_never_over(server: ForeignServer) -> None:
    assert server.rejected == []
    assert server.accepted and all(p + m <= server.window for p, m in server.accepted)


@pytest.mark.parametrize("kind", ["llama.cpp", "vllm", "tgi", "llama-cpp-python"])
@pytest.mark.parametrize("policy", ["truncate", "split"])
async def test_exact_counts_never_send_over_the_window(foreign: StartForeign, kind: str, policy: str) -> None:
    server = await foreign(kind=kind, window=2048)
    window = {"context_window": 2048} if kind == "llama-cpp-python" else {}  # it does not say its own
    cfg = config(server, token_policy=policy, **window)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        for name, text in SCRIPT_TEXTS.items():
            for repeat in (8, 40):
                response = await caller(long_request(text, repeat))
                assert response.complete or response.partial, name
    assert_never_over(server)
    assert caller.tokens is not None and caller.tokens.probes == 1
    assert caller.tokens.info is not None and caller.tokens.info.kind == kind
    assert caller.context_errors == 0


async def test_a_prompt_that_clearly_fits_is_not_counted(foreign: StartForeign) -> None:
    server = await foreign(kind="llama.cpp", window=8192)
    cfg = config(server)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        plan = await caller.plan(long_request(CHINESE, 4))
        await caller.send(plan)
    assert plan.guarded.decisions[0].clearly_fits() and not plan.guarded.decisions[0].exact
    assert server.tokenize_calls == 1  # the probe's: nothing to learn from a count here


async def test_near_the_window_the_count_is_exact_once_the_template_is_known(foreign: StartForeign) -> None:
    """The estimate would cut these prompts; the server's own count sends them whole."""
    first, second = long_request(CHINESE, 10), long_request(EMOJI + CODE, 12)
    tight = max(FOREIGN.chat(r.messages) for r in (first, second)) + 256 + 4
    server = await foreign(kind="llama.cpp", window=tight)
    cfg = config(server)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        await caller(first)  # counted exactly; its usage teaches the template's overhead
        assert not caller.guard.check(second, endpoint_key=client.base_url).fits  # by the estimate alone
        plan = await caller.plan(second)
        response = await caller.send(plan)
    decision = plan.guarded.decisions[0]
    served = server.accepted[-1][0]
    assert plan.guarded.action == "none" and response.complete and not response.warnings
    assert decision.exact and served <= decision.estimated_prompt_tokens <= served + len(second.messages)
    assert_never_over(server)


async def test_the_window_the_endpoint_states_is_used_from_the_first_request(foreign: StartForeign) -> None:
    server = await foreign(kind="vllm", window=1024)  # the model table would say 4096 for "foreign"
    cfg = config(server)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        response = await caller(long_request(ENGLISH, 60))
    assert response.warnings[0].action == "truncate"
    assert_never_over(server)
    assert (
        caller.guard.windows.source("foreign", client.base_url)
        == "the endpoint (GET /v1/models max_model_len)"
    )


async def test_the_configured_window_still_wins(foreign: StartForeign) -> None:
    server = await foreign(kind="llama.cpp", window=4096)
    cfg = config(server, context_window=1500)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        await caller(long_request(ENGLISH, 40))
    assert server.accepted and all(p + m <= 1500 for p, m in server.accepted)


@pytest.mark.parametrize("policy", ["truncate", "split"])
async def test_a_cut_still_over_by_the_exact_count_is_planned_again(
    foreign: StartForeign, policy: str
) -> None:
    """A guard that takes the server for cl100k cuts too little; the exact count of the cut
    catches it and the plan is made again before anything is sent."""
    server = await foreign(kind="llama.cpp", window=2048)
    cfg = config(server, token_policy=policy)
    trusting = ScriptLearner(priors={s: (0.5, 1.0) for s in SCRIPTS}, margin=0.0)
    guard = TokenGuard(cfg, counter=COUNTER, learner=trusting)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, guard)
        plan = await caller.plan(long_request(EMOJI * 30 + ENGLISH * 60, 1))
        counted_texts = server.tokenize_calls - 1  # after the probe's
        await caller.send(plan)
    assert plan.guarded.action == policy
    assert counted_texts > 2  # the system prompt, the user text, and then the cut text(s)
    assert all(d.content_tokens is not None and d.fits for d in plan.guarded.decisions)  # counted
    assert_never_over(server)


async def test_a_local_server_is_not_counted_like_openai_whatever_its_model_is_called(
    foreign: StartForeign,
) -> None:
    server = await foreign(kind="llama.cpp", window=2048, model="gpt-4o-mini")
    cfg = config(server, model="gpt-4o-mini", context_window=2048, token_counting="auto")
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        for text in SCRIPT_TEXTS.values():
            await caller(long_request(text, 14))
    assert caller.guard.learner.ratio(client.base_url, "cjk", "gpt-4o-mini") > 1.5
    assert_never_over(server)


async def test_without_routes_the_probe_runs_once_and_the_estimate_holds(foreign: StartForeign) -> None:
    """An endpoint like OpenAI or the mock: one probe, then per-script estimates from the first request."""
    server = await foreign(kind="openai", window=2048)
    cfg = config(server, context_window=2048)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        results = await asyncio.gather(*(caller(long_request(t, 30)) for t in SCRIPT_TEXTS.values()))
        for text in SCRIPT_TEXTS.values():
            await caller(long_request(text, 12))
    assert all(r.complete or r.partial for r in results)
    assert_never_over(server)
    probes = {path: n for (_, path), n in server.requests.items() if "completions" not in path}
    assert probes == {"/props": 1, "/v1/models": 1, "/info": 1, "/extras/tokenize/count": 1}


async def test_estimate_mode_never_probes(foreign: StartForeign) -> None:
    server = await foreign(kind="llama.cpp", window=2048)
    cfg = config(server, context_window=2048, token_counting="estimate")
    async with LLMClient(cfg) as client:
        caller = GuardingCaller.for_client(client, TokenGuard(cfg, counter=COUNTER))
        await caller(long_request(CHINESE, 30))
    assert set(server.requests) == {("POST", "/v1/chat/completions")}
    assert_never_over(server)


async def test_a_plain_caller_probes_nothing(foreign: StartForeign) -> None:
    server = await foreign(kind="llama.cpp", window=2048)
    cfg = config(server, context_window=2048)
    async with LLMClient(cfg) as client:
        caller = GuardingCaller(client.call, TokenGuard(cfg, counter=COUNTER), endpoint_key=client.base_url)
        await caller(long_request(ENGLISH, 5))
    assert caller.tokens is None and set(server.requests) == {("POST", "/v1/chat/completions")}


async def test_the_pipeline_probes_its_client_and_runs_a_long_workload(foreign: StartForeign) -> None:
    server = await foreign(kind="llama.cpp", window=2048)
    cfg = config(server, cache_enabled=False)
    designs = load_workload(long_context_workload_path())
    async with Pipeline.from_config(cfg) as pipeline:
        assert server.requests[("GET", "/props")] == 1  # probed on entry: no request waits for it
        results = await pipeline.run_many(designs, concurrency=4)
        guarding = pipeline.services.guard
    assert all(r.ok for r in results), [repr(r.error) for r in results if not r.ok]
    assert all(r.partial and r.warnings for r in results)
    assert_never_over(server)
    assert guarding is not None and guarding.tokens is not None and guarding.tokens.probes == 1
    assert server.requests[("GET", "/props")] == 1
