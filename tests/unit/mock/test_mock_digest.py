"""Every answer names the request it answers: request_digest and the tag line."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest

from pytest_iterate.batch.packing import pack_prompts, split_packed_answer
from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.mock.core import MockLLM, MockReply
from pytest_iterate.doubles.mock.digest import answer_digest, answer_digests, request_digest
from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL, mock_router

CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You write code."},
    {"role": "user", "content": "Task: Build a trie"},
]


async def whole_text(reply: MockReply) -> list[str]:
    """The text of every choice, whether the reply is a JSON body or an SSE stream."""
    if reply.chunks is None:
        data = json.loads(reply.body)
        return [c["message"]["content"] if "message" in c else c["text"] for c in data["choices"]]
    texts: dict[int, str] = {}
    async for chunk in reply.chunks:
        for line in chunk.decode().splitlines():
            if line.startswith("data: {"):
                for c in json.loads(line[6:])["choices"]:
                    piece = c["delta"].get("content", "") if "delta" in c else c["text"]
                    texts[c["index"]] = texts.get(c["index"], "") + piece
    return [texts[i] for i in sorted(texts)]


def test_request_digest_covers_what_changes_the_answer_and_nothing_else() -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 200, "temperature": 0}
    d = request_digest(body)
    assert re.fullmatch(r"[0-9a-f]{16}", d)
    same = {**body, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.0}
    assert request_digest(dict(reversed(list(same.items())))) == d
    for change in (
        {"max_tokens": 201},
        {"temperature": 0.5},
        {"model": "gpt-4o"},
        {"top_p": 0.9},
        {"seed": 1},
    ):
        assert request_digest({**body, **change}) != d, change
    other_message = [MESSAGES[0], {"role": "user", "content": "Task: Build a heap"}]
    assert request_digest({**body, "messages": other_message}) != d
    assert request_digest({"model": "m", "prompt": "a"}) != request_digest({"model": "m", "prompt": ["a"]})


@pytest.mark.parametrize("bad", [["model", "m"], "text", None])
def test_request_digest_refuses_what_is_not_a_body(bad: Any) -> None:
    with pytest.raises(TypeError, match="request_digest needs the request body as a mapping"):
        request_digest(bad)
    with pytest.raises(TypeError, match="not plain JSON"):
        request_digest({"model": "m", "stop": {1, 2}})


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("route", ["chat", "completions", "completions-list", "packed"])
async def test_every_answer_carries_the_digest_of_its_request(route: str, stream: bool) -> None:
    """A plain request's answer names its body; an item of a batch names the request it stands
    for alone: its prompt of the list, or its packed item as the user message with its share
    of max_tokens."""
    core = MockLLM("fast", seed=4)
    packed_items = ["Task: a stack", "Task: a queue", "Task: a heap"]
    if route == "chat":
        path, body = CHAT, {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 300}
    elif route == "packed":
        packed = pack_prompts(packed_items)
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": packed}]
        path, body = CHAT, {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 900}
    else:
        prompt: Any = ["Task: one", "Task: two"] if route == "completions-list" else "Task: one"
        path = "/v1/completions"
        body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "max_tokens": 300, "temperature": 0}
    if stream:
        body = {**body, "stream": True}
    texts = await whole_text(await core.handle("POST", path, {}, json.dumps(body).encode()))
    digest = request_digest(body)
    if route == "completions-list":
        expected = [[request_digest({**body, "prompt": p})] for p in body["prompt"]]
    elif route == "packed":
        alone = [
            {**body, "messages": [body["messages"][0], {"role": "user", "content": item}], "max_tokens": 300}
            for item in packed_items
        ]
        expected = [[request_digest(b) for b in alone]]
    else:
        expected = [[digest]]
    assert [answer_digests(text) for text in texts] == expected
    for text, tags in zip(texts, expected, strict=True):
        blocks = re.findall(r"```python\n(.*?)```", text, re.S)
        assert [b.splitlines()[0] for b in blocks] == [f"# answers {tag}" for tag in tags]
        for block in blocks:
            ast.parse(block)
    if route == "packed":
        items = split_packed_answer(texts[0], 3)
        assert [answer_digest(item or "") for item in items] == expected[0]
    assert core.calls[-1].digest == digest


async def test_a_packed_answer_is_as_long_as_its_items_alone_within_its_share_of_max_tokens() -> None:
    core = MockLLM("fast", seed=4)
    items = ["Task: a stack", "Task: a queue", "Task: a heap"]
    alone = []
    for item in items:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": item}]}
        alone.append((await whole_text(await core.handle("POST", CHAT, {}, json.dumps(body).encode())))[0])
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": pack_prompts(items)}]}
    reply = await core.handle("POST", CHAT, {}, json.dumps(body).encode())
    data = json.loads(reply.body)
    parts = split_packed_answer(data["choices"][0]["message"]["content"], 3)
    count = core._book.counter.count_text
    for part, single in zip(parts, alone, strict=True):
        assert part is not None and abs(count(part) - count(single)) <= 6  # only the tags differ
    assert data["usage"]["completion_tokens"] >= sum(count(a) for a in alone)
    # within a budget, every item is complete and shorter: nothing is cut, no 'length'
    tight = {**body, "max_tokens": 3 * 60}
    data = json.loads((await core.handle("POST", CHAT, {}, json.dumps(tight).encode())).body)
    assert data["choices"][0]["finish_reason"] == "stop" and data["usage"]["completion_tokens"] <= 180
    for part in split_packed_answer(data["choices"][0]["message"]["content"], 3):
        assert part is not None
        ast.parse(re.findall(r"```python\n(.*?)```", part, re.S)[0])


async def test_same_prompt_other_parameters_other_tag_same_words() -> None:
    core = MockLLM("fast", seed=4)
    base = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 300}
    a = (await whole_text(await core.handle("POST", CHAT, {}, json.dumps(base).encode())))[0]
    cold = {**base, "temperature": 0.7}
    b = (await whole_text(await core.handle("POST", CHAT, {}, json.dumps(cold).encode())))[0]
    assert answer_digest(a) == request_digest(base) != answer_digest(b) == request_digest(cold)
    assert a.replace(request_digest(base), "") == b.replace(request_digest(cold), "")


def test_answer_digest_finds_the_tag_line_only() -> None:
    assert answer_digest("no code here") is None
    assert answer_digest("```python\n#answers 0123456789abcdef\n```") is None
    assert answer_digest("x = '# answers 0123456789abcdef'") is None
    assert answer_digest("```python\n# answers 0123456789abcdef\n```") == "0123456789abcdef"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_our_client_gets_answers_tagged_with_the_body_it_sent(stream: bool) -> None:
    request = LLMRequest(messages=tuple(MESSAGES), max_tokens=256, stream=stream, params={"temperature": 0})  # type: ignore[arg-type]
    cfg = IterateConfig(base_url=MOCK_BASE_URL, transport="httpx", model="gpt-4o-mini")
    with mock_router(MockLLM("fast")):
        async with LLMClient(cfg, metrics=IterateMetrics()) as client:
            response = await client.call(request)
    assert answer_digest(response.text) == request_digest(request.body("gpt-4o-mini"))


async def test_every_design_of_the_standard_workload_gets_its_digest_within_its_budget() -> None:
    from pytest_iterate.pipeline.prompts import PromptBuilder
    from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

    async def no_wait(seconds: float) -> None:
        return None

    core = MockLLM("v1", sleep=no_wait)  # v1's ~380-token answers, cut by each design's max_tokens
    builder = PromptBuilder()
    designs = {d.id: d for d in load_workload(standard_workload_path())}
    assert len(designs) == 70
    for design in designs.values():
        body = builder.build(design).body("gpt-4o-mini")
        reply = await core.handle("POST", CHAT, {}, json.dumps(body).encode())
        text = json.loads(reply.body)["choices"][0]["message"]["content"]
        assert answer_digest(text) == request_digest(body), design.id
