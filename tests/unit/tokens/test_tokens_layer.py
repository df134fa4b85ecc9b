"""GuardingCaller over the real LLMClient and a respx route that acts like a real server.

The route counts tokens like a server with another tokenizer (40 % more than
cl100k plus a chat-template overhead per message, as llama.cpp with SmolLM2 does)
and answers 400 ``context_length_exceeded`` with OpenAI's error JSON when the
prompt + max_tokens exceed its 2048-token context, 200 with ``usage`` otherwise.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
import respx

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ClientError, ContextOverflow, error_for_status
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage
from pytest_iterate.tokens import SCRIPTS, GuardingCaller, ScriptLearner, TokenCounter, TokenGuard

BASE = "http://api.test/v1"
CHAT = BASE + "/chat/completions"
N_CTX = 2048
COUNTER = TokenCounter()
MODEL = "SmolLM2-360M-Instruct"


def trusting(ratio: float = 1.05) -> ScriptLearner:
    """A learner that takes the server for cl100k (every class 1.05 at first): it can be wrong."""
    return ScriptLearner(priors={s: (0.5, ratio) for s in SCRIPTS})


class StrictServer:
    """A fake endpoint that counts its own way and rejects what does not fit."""

    def __init__(self, *, factor: float = 1.4, per_message: int = 8, state_counts: bool = True) -> None:
        self.factor = factor
        self.per_message = per_message
        self.state_counts = state_counts
        self.seen: list[tuple[int, int]] = []  # (server prompt tokens, max_tokens) of every request
        self.rejected = 0

    def count(self, messages: list[dict[str, Any]]) -> int:
        return sum(
            math.ceil(COUNTER.count_text(m["content"]) * self.factor) + self.per_message for m in messages
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = self.count(body["messages"])
        max_tokens = body.get("max_tokens", 0)
        self.seen.append((prompt, max_tokens))
        if prompt + max_tokens > N_CTX:
            self.rejected += 1
            if self.state_counts:
                message = (
                    f"This model's maximum context length is {N_CTX} tokens. However, you requested "
                    f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the "
                    "completion). Please reduce the length of the messages or completion."
                )
            else:
                message = "the request exceeds the available context size, try increasing it"
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
            return httpx.Response(400, json={"error": error})
        last = body["messages"][-1]["content"][:12]
        reply = f"answer to {len(body['messages'])} messages, last starts {last!r}"
        return httpx.Response(
            200,
            json={
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": prompt, "completion_tokens": 7},
            },
        )


@pytest.fixture
def metrics() -> IterateMetrics:
    return IterateMetrics()


@pytest.fixture
async def client(metrics: IterateMetrics):  # type: ignore[no-untyped-def]
    config = IterateConfig(base_url=BASE, transport="httpx", model=MODEL)
    async with LLMClient(config, metrics=metrics) as c:
        yield c


def guarded(
    client: LLMClient,
    metrics: IterateMetrics,
    policy: str = "truncate",
    *,
    learner: ScriptLearner | None = None,
) -> GuardingCaller:
    guard = TokenGuard(client.config, metrics=metrics, counter=COUNTER, learner=learner or trusting())
    return GuardingCaller(client.call, guard, endpoint_key="smol", policy=policy)


def chat(user_words: int, *, history: int = 0, max_tokens: int = 256) -> LLMRequest:
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are terse."}]
    for i in range(history):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 60})
    messages.append({"role": "user", "content": "Summarise: " + "lorem ipsum dolor sit amet " * user_words})
    return LLMRequest(messages=tuple(messages), max_tokens=max_tokens)


def actions(metrics: IterateMetrics, action: str) -> float:
    return metrics.registry.get_sample_value("iterate_token_guard_actions_total", {"action": action}) or 0.0


@respx.mock
async def test_400_teaches_the_ratio_and_the_one_retry_fits(
    client: LLMClient, metrics: IterateMetrics
) -> None:
    server = StrictServer()
    route = respx.post(CHAT).mock(side_effect=server)
    caller = guarded(client, metrics)
    request = chat(290)  # about 1600 tokens for us: fits 2048 at our count, not at the server's
    assert caller.guard.check(request, endpoint_key="smol").fits
    response = await caller(request)
    assert route.call_count == 2 and server.rejected == 1
    prompt, max_tokens = server.seen[-1]
    assert prompt + max_tokens <= N_CTX
    assert [w.action for w in response.warnings] == ["retry", "truncate"] and response.partial
    assert response.text.startswith("answer to 2 messages")
    assert actions(metrics, "retry") == 1 and actions(metrics, "truncate") == 1
    # the endpoint's stated window and counts stay learned: the next long request is cut up front
    sent_before = len(server.seen)
    again = await caller(chat(300))
    assert route.call_count == sent_before + 1 and server.rejected == 1
    assert again.warnings[0].action == "truncate"


@respx.mock
async def test_usage_teaches_the_ratio_before_any_overflow(
    client: LLMClient, metrics: IterateMetrics
) -> None:
    server = StrictServer()
    route = respx.post(CHAT).mock(side_effect=server)
    caller = guarded(client, metrics)
    first = await caller(chat(100))  # fits either way; its usage shows the server counts more
    assert first.complete and caller.guard.learner.ratio("smol", "latin", MODEL) > 1.3
    second = await caller(chat(290))
    assert route.call_count == 2 and server.rejected == 0  # never overflowed
    assert second.warnings[0].action == "truncate"
    assert all(p + m <= N_CTX for p, m in server.seen)


@respx.mock
async def test_an_unmeasured_server_is_bounded_from_its_first_request(
    client: LLMClient, metrics: IterateMetrics
) -> None:
    """The default priors of an open model hold for a server counting 40 % more: no 400 at all."""
    server = StrictServer()
    route = respx.post(CHAT).mock(side_effect=server)
    caller = guarded(client, metrics, learner=ScriptLearner())
    response = await caller(chat(290))
    assert route.call_count == 1 and server.rejected == 0
    assert response.warnings[0].action == "truncate"
    prompt, max_tokens = server.seen[0]
    assert prompt + max_tokens <= N_CTX


@respx.mock
async def test_refuse_policy_gives_a_clear_context_overflow(
    client: LLMClient, metrics: IterateMetrics
) -> None:
    server = StrictServer()
    respx.post(CHAT).mock(side_effect=server)
    caller = guarded(client, metrics, policy="refuse")
    with pytest.raises(ContextOverflow) as info:
        await caller(chat(290))
    exc = info.value
    assert exc.context_window == N_CTX and exc.max_tokens == 256
    assert exc.prompt_tokens is not None and exc.prompt_tokens >= server.seen[0][0]
    assert server.rejected == 1 and len(server.seen) == 1  # no second send


@respx.mock
async def test_server_without_counts_tightens_and_gives_up_after_one_retry(
    client: LLMClient, metrics: IterateMetrics
) -> None:
    server = StrictServer(factor=3.0, state_counts=False)  # a wildly different tokenizer
    route = respx.post(CHAT).mock(side_effect=server)
    caller = guarded(client, metrics)
    with pytest.raises(ContextOverflow, match="after one retry") as info:
        await caller(chat(290))
    assert route.call_count == 2 and info.value.max_tokens == 256
    assert caller.guard.learner.ratio("smol", "latin", MODEL) > 1.05 * 1.25


@respx.mock
async def test_other_400s_pass_through(client: LLMClient, metrics: IterateMetrics) -> None:
    error = {"error": {"message": "Invalid model", "type": "invalid_request_error", "code": "bad_model"}}
    route = respx.post(CHAT).mock(return_value=httpx.Response(400, json=error))
    with pytest.raises(ClientError):
        await guarded(client, metrics)(chat(10))
    assert route.call_count == 1


class FakeInner:
    """An inner Caller that records requests and answers with usage like cl100k x 1.2."""

    def __init__(self, finish_reason: str = "stop") -> None:
        self.requests: list[LLMRequest] = []
        self.finish_reason = finish_reason

    async def __call__(self, request: LLMRequest, /, *, on_delta: Any = None) -> LLMResponse:
        self.requests.append(request)
        text = f"part{len(self.requests)}"
        if on_delta is not None:
            on_delta(text)
        prompt = math.ceil(COUNTER.count_messages(request.messages) * 1.2)
        return LLMResponse(text=text, finish_reason=self.finish_reason, usage=Usage(prompt, 3), total_s=0.5)


async def test_split_runs_pieces_in_order_and_joins_the_answers() -> None:
    metrics = IterateMetrics()
    guard = TokenGuard(
        IterateConfig(context_window=400), metrics=metrics, counter=COUNTER, learner=trusting()
    )
    inner = FakeInner()
    caller = GuardingCaller(inner, guard, endpoint_key="e", policy="split", joiner=" | ")
    text = "Paragraph about foxes and dogs.\n\n" * 120
    messages = ({"role": "system", "content": "s"}, {"role": "user", "content": text})
    request = LLMRequest(messages=messages, max_tokens=64)
    deltas: list[str] = []
    response = await caller(request, on_delta=deltas.append)
    n = len(inner.requests)
    assert n > 3
    assert "".join(r.messages[-1]["content"] for r in inner.requests) == text
    assert response.text == " | ".join(f"part{i}" for i in range(1, n + 1)) == "".join(deltas)
    assert response.usage is not None and response.usage.completion_tokens == 3 * n
    assert response.total_s == pytest.approx(0.5 * n)
    assert response.warnings[0].action == "split" and response.partial
    # the first piece is planned at 1.05; every later one is re-checked against the bound
    # learned from the usage of the pieces before it (the server counts 1.2x) and re-split
    for sent in inner.requests[1:]:
        assert math.ceil(COUNTER.count_messages(sent.messages) * 1.2) + 64 <= 400
    assert guard.learner.ratio("e", "latin", guard.default_model) >= 1.2


async def test_length_finish_is_flagged_through_the_layer() -> None:
    metrics = IterateMetrics()
    guard = TokenGuard(IterateConfig(), metrics=metrics, counter=COUNTER)
    caller = GuardingCaller(FakeInner(finish_reason="length"), guard)
    response = await caller(LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=3))
    assert [w.action for w in response.warnings] == ["length"] and not response.complete
    assert actions(metrics, "length") == 1


async def test_fake_inner_raising_context_error_is_learned() -> None:
    """The error_for_status path as the client would raise it, without HTTP."""
    guard = TokenGuard(IterateConfig(context_window=N_CTX), counter=COUNTER, learner=trusting())
    calls: list[LLMRequest] = []

    async def inner(request: LLMRequest, /, *, on_delta: Any = None) -> LLMResponse:
        calls.append(request)
        server = math.ceil(COUNTER.count_messages(request.messages) * 1.5)
        if server + (request.max_tokens or 0) > N_CTX:
            raise error_for_status(
                400,
                url=CHAT,
                code="context_length_exceeded",
                detail=f"This model's maximum context length is {N_CTX} tokens. However, you requested "
                f"{server + (request.max_tokens or 0)} tokens ({server} in the messages, "
                f"{request.max_tokens} in the completion).",
            )
        return LLMResponse(text="ok", finish_reason="stop", usage=Usage(server, 1))

    caller = GuardingCaller(inner, guard, endpoint_key="x")
    response = await caller(chat(280))
    assert len(calls) == 2 and response.text == "ok"
    assert math.ceil(COUNTER.count_messages(calls[-1].messages) * 1.5) + 256 <= N_CTX


async def test_plan_refuses_before_any_send_and_send_counts_the_pieces() -> None:
    guard = TokenGuard(IterateConfig(context_window=400), counter=COUNTER)
    inner = FakeInner()
    caller = GuardingCaller(inner, guard, endpoint_key="e")
    text = "Paragraph about foxes and dogs.\n\n" * 60
    long = LLMRequest(messages=({"role": "user", "content": text},), max_tokens=64)
    with pytest.raises(ContextOverflow, match="policy is refuse"):
        await caller.plan(long, policy="refuse")
    assert inner.requests == []
    plan = await caller.plan(long, policy="split")
    assert plan.guarded.action == "split" and plan.sends == 0
    assert [w.action for w in plan.warnings] == ["split"]
    response = await caller.send(plan)
    assert plan.sends == len(inner.requests) >= 2
    assert response.text == "\n\n".join(f"part{i}" for i in range(1, plan.sends + 1))


async def test_failed_sends_count_and_a_second_context_error_overflows() -> None:
    guard = TokenGuard(IterateConfig(context_window=N_CTX), counter=COUNTER)

    async def always_too_long(request: LLMRequest, /, *, on_delta: Any = None) -> LLMResponse:
        detail = "the request exceeds the available context size"  # no counts to learn from
        raise error_for_status(400, url=CHAT, code="context_length_exceeded", detail=detail)

    caller = GuardingCaller(always_too_long, guard, endpoint_key="x")
    plan = await caller.plan(chat(10))
    with pytest.raises(ContextOverflow, match="after one retry"):
        await caller.send(plan)
    assert plan.sends == 2 and caller.context_errors == 2
