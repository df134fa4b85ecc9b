"""The simulation core driven directly, on virtual time (no real waiting)."""

from __future__ import annotations

import ast
import asyncio
import json
import math
import re
import statistics
from typing import Any

import pytest

from pytest_iterate.batch.packing import pack_prompts, split_packed_answer
from pytest_iterate.doubles.mock.core import MockLLM, MockReply
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.profiles import Distribution, LatencyProfile
from pytest_iterate.doubles.mock.ratelimit import RateLimiter
from pytest_iterate.tokens import TokenCounter

CHAT = "/v1/chat/completions"


class VirtualTime:
    """A clock and a sleep that only advance virtual time."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def chat(content: str, **extra: Any) -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    ).encode()


def core_on(vt: VirtualTime, profile: str | LatencyProfile = "v1", **kwargs: Any) -> MockLLM:
    return MockLLM(profile, clock=vt.clock, sleep=vt.sleep, **kwargs)


async def drain(reply: MockReply) -> list[bytes]:
    assert reply.chunks is not None
    return [c async for c in reply.chunks]


def sse_payloads(chunks: list[bytes]) -> list[Any]:
    out = []
    for event in b"".join(chunks).decode().split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_2000_requests_match_the_profile_means_and_the_fault_rate() -> None:
    vt = VirtualTime()
    rate = 0.03
    core = core_on(vt, "v1", seed=11, faults=FaultPlan({"503": rate}))
    profile = core.profile
    ttfts: list[float] = []
    totals: list[float] = []
    expected_ttft: list[float] = []
    expected_total: list[float] = []
    n = 2000
    for i in range(n):
        prompt = f"Task: design number {i}\nLanguage: python\nRequirements:\n- be quick"
        t0 = vt.now
        reply = await core.handle("POST", CHAT, {}, chat(prompt))
        if reply.status == 200:
            totals.append(vt.now - t0)
            expected_total.append(profile.expected_total_s(core.calls[-1].prompt_tokens))
        t0 = vt.now
        reply = await core.handle("POST", CHAT, {}, chat(prompt, stream=True))
        if reply.status == 200:
            assert reply.chunks is not None
            await reply.chunks.__anext__()
            ttfts.append(vt.now - t0)
            expected_ttft.append(profile.expected_ttft_s(core.calls[-1].prompt_tokens))
            await reply.chunks.aclose()  # type: ignore[attr-defined]
    assert statistics.fmean(ttfts) == pytest.approx(statistics.fmean(expected_ttft), rel=0.05)
    assert statistics.fmean(totals) == pytest.approx(statistics.fmean(expected_total), rel=0.05)
    # v1 with uncut ~380-token answers (no max_tokens); over the standard workload, whose
    # max_tokens cut most answers, a call is 2.3 s (test_mock_calibration.py)
    assert 2.6 < statistics.fmean(totals) < 3.2
    faults = core.stats.faults.get("503", 0)
    requests = 2 * n
    sigma = math.sqrt(requests * rate * (1 - rate))
    assert abs(faults - requests * rate) <= 4 * sigma
    assert faults == core.stats.statuses[503]
    assert core.stats.concurrency == 0  # closed streams gave their slot back


async def run_sequence(seed: int) -> list[tuple[Any, ...]]:
    vt = VirtualTime()
    plan = FaultPlan({"429": 0.05, "503": 0.05, "malformed_json": 0.05, "empty_choices": 0.05})
    core = core_on(vt, "degraded", seed=seed, faults=plan)
    out = []
    for i in range(120):
        t0 = vt.now
        reply = await core.handle("POST", CHAT, {}, chat(f"Task: thing {i % 7}"))
        out.append((reply.status, core.calls[-1].fault, round(vt.now - t0, 9), reply.body))
    return out


async def test_same_seed_same_sequence_other_seed_differs() -> None:
    a, b, c = await run_sequence(5), await run_sequence(5), await run_sequence(6)
    assert a == b
    assert a != c
    assert {x[1] for x in a} > {None}  # some faults happened


async def test_streamed_and_plain_answers_agree_and_code_parses() -> None:
    vt = VirtualTime()
    core = core_on(vt, "fast", seed=3)
    plain = await core.handle("POST", CHAT, {}, chat("Task: Build a rate limiter"))
    data = json.loads(plain.body)
    text = data["choices"][0]["message"]["content"]
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m is not None
    ast.parse(m.group(1))
    assert data["usage"]["completion_tokens"] == TokenCounter().count_text(text)
    assert data["usage"]["prompt_tokens"] == TokenCounter().count_messages(
        [{"role": "user", "content": "Task: Build a rate limiter"}]
    )
    stream = await core.handle(
        "POST",
        CHAT,
        {},
        chat("Task: Build a rate limiter", stream=True, stream_options={"include_usage": True}),
    )
    payloads = sse_payloads(await drain(stream))
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["usage"] == data["usage"]
    joined = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[:-2] if p["choices"])
    assert joined == text
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-3]["choices"][0]["finish_reason"] == "stop"


async def test_max_tokens_cuts_the_answer_with_finish_reason_length() -> None:
    core = core_on(VirtualTime(), "v1")
    reply = await core.handle("POST", CHAT, {}, chat("Task: long one", max_tokens=20))
    data = json.loads(reply.body)
    assert data["usage"]["completion_tokens"] == 20
    assert data["choices"][0]["finish_reason"] == "length"


async def test_packed_prompt_gets_one_answer_per_item() -> None:
    core = core_on(VirtualTime(), "fast")
    items = ["Task: a stack", "Task: a queue", "Task: a heap"]
    reply = await core.handle("POST", CHAT, {}, chat(pack_prompts(items)))
    text = json.loads(reply.body)["choices"][0]["message"]["content"]
    answers = split_packed_answer(text, 3)
    assert all(a is not None for a in answers)
    assert [a.splitlines()[0] for a in answers if a] == ["## a stack", "## a queue", "## a heap"]


async def test_list_prompt_on_completions_gets_one_choice_per_prompt_in_order() -> None:
    core = core_on(VirtualTime(), "fast")
    body = json.dumps(
        {"model": "gpt-3.5-turbo-instruct", "prompt": ["Task: one", "Task: two"], "max_tokens": 100}
    )
    data = json.loads((await core.handle("POST", "/v1/completions", {}, body.encode())).body)
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["choices"][0]["text"].startswith("## one") and data["choices"][1]["text"].startswith("## two")
    stream = await core.handle(
        "POST", "/v1/completions", {}, body.replace('"max_tokens"', '"stream": true, "max_tokens"').encode()
    )
    payloads = sse_payloads(await drain(stream))
    texts = ["", ""]
    for p in payloads[:-1]:
        for c in p["choices"]:
            texts[c["index"]] += c["text"]
    assert texts == [c["text"] for c in data["choices"]]


async def test_context_length_exceeded_in_openai_shape() -> None:
    profile = LatencyProfile("tiny", context_window=50)
    core = core_on(VirtualTime(), profile)
    reply = await core.handle("POST", CHAT, {}, chat("word " * 30, max_tokens=30))
    assert reply.status == 400
    err = json.loads(reply.body)["error"]
    assert err["code"] == "context_length_exceeded" and err["type"] == "invalid_request_error"
    assert "maximum context length is 50 tokens" in err["message"]
    assert core.stats.faults == {"context_length_exceeded": 1}
    ok = await core.handle("POST", CHAT, {}, chat("word " * 30, max_tokens=5))
    assert ok.status == 200


async def test_rate_limit_headers_and_429() -> None:
    vt = VirtualTime()
    core = core_on(vt, "zero", rate_limit=RateLimiter(requests_per_min=2, clock=vt.clock))
    r1 = await core.handle("POST", CHAT, {}, chat("x"))
    assert r1.headers["x-ratelimit-remaining-requests"] == "1"
    await core.handle("POST", CHAT, {}, chat("x"))
    r3 = await core.handle("POST", CHAT, {}, chat("x"))
    assert r3.status == 429 and r3.headers["retry-after"] == "30"
    assert json.loads(r3.body)["error"]["code"] == "rate_limit_exceeded"
    assert r3.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize(
    ("kind", "status", "header"),
    [
        ("429", 429, "retry-after"),
        ("429ms", 429, "retry-after-ms"),
        ("500", 500, None),
        ("502", 502, None),
        ("503", 503, None),
        ("529", 529, None),
    ],
)
async def test_status_faults(kind: str, status: int, header: str | None) -> None:
    core = core_on(VirtualTime(), "fast", faults=FaultPlan(script={1: kind}, retry_after_s=0.25))
    reply = await core.handle("POST", CHAT, {}, chat("x"))
    assert reply.status == status
    assert "error" in json.loads(reply.body)
    if header:
        assert reply.headers[header] == ("1" if header == "retry-after" else "250")
    assert (await core.handle("POST", CHAT, {}, chat("x"))).status == 200


async def test_body_and_stream_faults() -> None:
    script = {
        1: "malformed_json",
        2: "empty_choices",
        3: "stream_cut",
        4: "stream_error",
        5: "empty_choices",
        6: "hang",
        7: "reset",
        8: "stream_error",
    }
    core = core_on(VirtualTime(), "fast", faults=FaultPlan(script=script))
    with pytest.raises(ValueError):
        json.loads((await core.handle("POST", CHAT, {}, chat("x"))).body)
    assert json.loads((await core.handle("POST", CHAT, {}, chat("x"))).body)["choices"] == []
    cut = b"".join(await drain(await core.handle("POST", CHAT, {}, chat("x", stream=True))))
    assert b"[DONE]" not in cut and cut.count(b"data: ") > 3
    err = b"".join(await drain(await core.handle("POST", CHAT, {}, chat("x", stream=True))))
    assert b"event: error" in err and b"[DONE]" not in err
    empty = sse_payloads(await drain(await core.handle("POST", CHAT, {}, chat("x", stream=True))))
    assert empty == [
        {
            "id": "chatcmpl-mock5",
            "object": "chat.completion.chunk",
            "created": 1767225600,
            "model": "gpt-4o-mini",
            "choices": [],
        },
        "[DONE]",
    ]
    assert (await core.handle("POST", CHAT, {}, chat("x"))).fault == "hang"
    assert (await core.handle("POST", CHAT, {}, chat("x"))).fault == "reset"
    assert (await core.handle("POST", CHAT, {}, chat("x"))).status == 500  # stream_error, not streamed
    assert core.stats.faults == {
        "malformed_json": 1,
        "empty_choices": 2,
        "stream_cut": 1,
        "stream_error": 2,
        "hang": 1,
        "reset": 1,
    }


async def test_capacity_queues_and_load_slows_tokens() -> None:
    # real (short) time: the queue and the slowdown need a real scheduler
    profile = LatencyProfile("q", capacity=2, load_slowdown=1.0, itl=Distribution("fixed", 0.01))
    core = MockLLM(profile)
    replies = await asyncio.gather(
        *(core.handle("POST", CHAT, {}, chat(f"Task: {i}", max_tokens=11)) for i in range(4))
    )
    assert all(r.status == 200 for r in replies)
    calls = core.calls
    # the first runs alone (10 tokens x 10 ms), the second beside it at doubled per-token time
    assert calls[0].planned_total_s == pytest.approx(0.1, abs=0.01)
    assert calls[1].planned_total_s == pytest.approx(0.2, abs=0.01)
    # the last two waited for a slot
    assert min(c.planned_ttft_s for c in calls[2:]) >= 0.09
    assert core.stats.max_concurrency == 4 and core.stats.concurrency == 0


async def test_routes_errors_models_and_metrics() -> None:
    core = core_on(VirtualTime(), "fast")
    models = json.loads((await core.handle("GET", "/v1/models", {}, b"")).body)
    assert [m["id"] for m in models["data"]] == list(core.profile.models)
    assert (await core.handle("GET", "/v1/nothing", {}, b"")).status == 404
    assert (await core.handle("GET", CHAT, {}, b"")).status == 405
    bad = await core.handle("POST", CHAT, {}, b"{not json")
    assert bad.status == 400 and json.loads(bad.body)["error"]["type"] == "invalid_request_error"
    assert (await core.handle("POST", CHAT, {}, b'{"model": "m"}')).status == 400
    await core.handle("POST", CHAT, {}, chat("x"))
    text = core.exposition().decode()
    assert 'mock_requests_total{route="chat",status="200"} 1.0' in text
    assert 'mock_requests_total{route="chat",status="400"} 2.0' in text
    assert "mock_concurrent_requests 0.0" in text
    assert core.stats.requests == 6 and len(core.calls) == 6


async def test_probe_routes_health_version_and_one_model() -> None:
    from importlib.metadata import version

    import pytest_iterate

    core = core_on(VirtualTime(), "fast")
    for path in ("/health", "/v1/health"):
        reply = await core.handle("GET", path, {}, b"")
        assert reply.status == 200 and json.loads(reply.body) == {"status": "ok"}
        assert reply.headers["content-type"] == "application/json"
    ver = await core.handle("GET", "/version", {}, b"")
    assert ver.status == 200
    assert pytest_iterate.__version__ == version("pytest-iterate")
    assert json.loads(ver.body) == {"version": pytest_iterate.__version__}
    one = await core.handle("GET", "/v1/models/gpt-4o", {}, b"")
    assert one.status == 200 and json.loads(one.body)["id"] == "gpt-4o"
    missing = await core.handle("GET", "/v1/models/nope", {}, b"")
    assert missing.status == 404
    assert json.loads(missing.body)["error"]["code"] == "model_not_found"
    head = await core.handle("HEAD", "/health", {}, b"")
    assert head.status == 200 and head.body == b""
    assert (await core.handle("POST", "/health", {}, b"{}")).status == 405
    assert core.stats.routes == {"health": 4, "version": 1, "models": 2}
    assert core.stats.completions == 0


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {"messages": ["hi"]},
            "messages[0]",
            "Invalid value for 'messages[0]': expected an object with a 'role'",
        ),
        ({"messages": [{"content": "x"}]}, "messages[0]", "expected an object with a 'role', got {'content'"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens", "got -1"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10.5}, "max_tokens", "got 10.5"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "100"}, "max_tokens", "got '100'"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": True}, "max_tokens", "got True"),
        (
            {"prompt": "x", "max_completion_tokens": -5},
            "max_completion_tokens",
            "expected an integer >= 0, got -5",
        ),
    ],
)
async def test_bad_request_values_get_a_400_naming_the_field(
    body: dict[str, Any], param: str, message: str
) -> None:
    core = core_on(VirtualTime(), "fast")
    path = CHAT if "messages" in body else "/v1/completions"
    reply = await core.handle("POST", path, {}, json.dumps(body).encode())
    assert reply.status == 400
    error = json.loads(reply.body)["error"]
    assert error["param"] == param and message in error["message"]
    assert core.stats.completions == 0


async def test_non_finite_max_tokens_is_a_400_not_a_crash() -> None:
    core = core_on(VirtualTime(), "fast")
    for raw in (b'{"prompt": "x", "max_tokens": NaN}', b'{"prompt": "x", "max_tokens": 1e999}'):
        reply = await core.handle("POST", "/v1/completions", {}, raw)
        assert reply.status == 400 and json.loads(reply.body)["error"]["param"] == "max_tokens"
    whole = await core.handle("POST", "/v1/completions", {}, b'{"prompt": "x", "max_tokens": 12.0}')
    assert whole.status == 200 and json.loads(whole.body)["usage"]["completion_tokens"] == 12
