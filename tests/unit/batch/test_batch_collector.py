"""BatchCollector: a window, a size, groups that can share a call, every item its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pytest_iterate.batch.call import batch_llm_call_results
from pytest_iterate.batch.collector import BatchCollector
from pytest_iterate.batch.packing import item_header, parse_packed_prompt
from pytest_iterate.client.errors import ClientError, ConfigError, ServerError
from pytest_iterate.client.types import LLMRequest, LLMResponse, Usage

SYSTEM = {"role": "system", "content": "You write code."}


def chat(text: str, *, system: bool = True, max_tokens: int | None = 64, **params: Any) -> LLMRequest:
    messages = (SYSTEM, {"role": "user", "content": text}) if system else ({"role": "user", "content": text},)
    return LLMRequest(messages=messages, max_tokens=max_tokens, params={"temperature": 0, **params})


def answer_of(prompt: str) -> str:
    return f"answer to <{prompt}>"


class Upstream:
    """A Caller answering plain, packed and list-prompt requests; it records what it got."""

    def __init__(
        self, *, native: bool = True, fail: set[str] | None = None, delay: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.native = native
        self.fail = fail or set()
        self.delay = delay
        self.requests: list[LLMRequest] = []

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse:
        self.requests.append(request)
        await asyncio.sleep(self.delay())
        if request.endpoint == "completions":
            assert isinstance(request.prompt, tuple)
            if not self.native:
                raise ServerError("http://up/v1 answered 500", status=500)
            texts = [answer_of(p) for p in request.prompt]
            choices = [{"index": i, "text": t, "finish_reason": "stop"} for i, t in enumerate(texts)]
            usage = Usage(10 * len(texts), 5 * len(texts))
            return LLMResponse(texts[0], "stop", usage, texts=texts, raw={"choices": choices})
        content = str(request.messages[-1]["content"])
        items = parse_packed_prompt(content)
        if items is not None:
            body = "\n".join(f"{item_header(i)}\n{answer_of(p)}" for i, p in enumerate(items, 1))
            return LLMResponse(body, "stop", Usage(20 * len(items), 5 * len(items)))
        if content in self.fail:
            raise ClientError("http://up/v1 answered 400: bad item", status=400)
        return LLMResponse(answer_of(content), "stop", Usage(20, 5))


async def test_requests_within_the_window_go_out_together_each_with_its_own_answer() -> None:
    up = Upstream()
    c = BatchCollector(up, batch_size=8, window_s=0.05)
    items = await asyncio.gather(*(c.submit(chat(f"task {i}")) for i in range(5)))
    assert [i.result().text for i in items] == [answer_of(f"You write code.\n\ntask {i}") for i in range(5)]
    assert len(up.requests) == 1 and up.requests[0].endpoint == "completions"
    assert [i.batch_size for i in items] == [5] * 5 and {i.strategy for i in items} == {"native"}
    assert [i.calls for i in items] == [1, 0, 0, 0, 0]  # the call counts for the first item
    assert c.stats.batches == 1 and c.stats.requests == 5 and c.stats.calls == 1 and c.stats.calls_saved == 4


async def test_a_full_batch_goes_at_once_without_waiting_for_the_window() -> None:
    up = Upstream()
    c = BatchCollector(up, batch_size=4, window_s=30.0)
    async with asyncio.timeout(5):
        items = await asyncio.gather(*(c.submit(chat(f"t{i}")) for i in range(8)))
    assert len(up.requests) == 2 and all(i.batch_size == 4 for i in items)


async def test_a_lone_request_waits_at_most_the_window() -> None:
    up = Upstream()
    c = BatchCollector(up, batch_size=8, window_s=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    item = await c.submit(chat("alone"))
    waited = loop.time() - started
    assert item.batch_size == 1 and item.strategy == "concurrent" and item.calls == 1
    assert 0.04 <= waited < 2.0
    assert up.requests[0].messages == chat("alone").messages  # sent as it was


async def test_only_requests_that_can_share_a_call_are_grouped() -> None:
    up = Upstream()
    c = BatchCollector(up, batch_size=8, window_s=0.05)
    requests = [
        chat("a"),
        chat("b"),
        chat("c", max_tokens=128),  # another max_tokens
        chat("d", temperature=0.5),  # other sampling parameters
        chat("e", system=False),  # no system message
        chat("f").replace(model="other-model"),
    ]
    items = await asyncio.gather(*(c.submit(r) for r in requests))
    assert [i.batch_size for i in items] == [2, 2, 1, 1, 1, 1]
    assert len(up.requests) == 5
    for request, item in zip(requests, items, strict=True):  # each answer is its own request's
        assert item.result().text.endswith(f"{request.messages[-1]['content']}>")


@pytest.mark.parametrize(
    "request_",
    [
        chat("x").replace(stream=True),
        LLMRequest(prompt="x", endpoint="completions"),
        LLMRequest(messages=(SYSTEM, SYSTEM, {"role": "user", "content": "x"})),
        LLMRequest(messages=({"role": "user", "content": [{"type": "text", "text": "x"}]},)),
        LLMRequest(messages=({"role": "user", "content": "x", "name": "bob"},)),
        LLMRequest(messages=({"role": "user", "content": "x"}, {"role": "assistant", "content": "y"})),
    ],
    ids=["streamed", "completions", "two-systems", "parts", "named", "ends-with-assistant"],
)
async def test_what_cannot_share_a_call_is_refused_with_a_clear_error(request_: LLMRequest) -> None:
    c = BatchCollector(Upstream(), batch_size=4)
    assert not c.batchable(request_)
    with pytest.raises(ConfigError, match="cannot be batched"):
        await c.submit(request_)


async def test_an_item_that_fails_alone_keeps_its_error_and_the_others_their_answers() -> None:
    up = Upstream(native=False, fail={"bad"})
    c = BatchCollector(up, batch_size=3, window_s=1.0, strategy="concurrent")
    items = await asyncio.gather(*(c.submit(chat(t, system=False)) for t in ("good", "bad", "fine")))
    assert items[0].result().text == answer_of("good") and items[2].result().text == answer_of("fine")
    assert isinstance(items[1].error, ClientError)
    with pytest.raises(ClientError, match="bad item"):
        items[1].result()
    assert sum(i.calls for i in items) == c.stats.calls == 3


async def test_a_refused_native_batch_falls_back_to_packing_and_loses_no_item() -> None:
    up = Upstream(native=False)
    c = BatchCollector(up, batch_size=4, window_s=1.0)
    items = await asyncio.gather(*(c.submit(chat(f"t{i}")) for i in range(4)))
    assert [i.result().text for i in items] == [answer_of(f"t{i}") for i in range(4)]
    assert [i.strategy for i in items] == ["packed"] * 4
    assert [r.endpoint for r in up.requests] == ["completions", "chat"]  # the probe, then one pack
    packed = up.requests[1]
    assert packed.messages[0] == SYSTEM and packed.max_tokens == 4 * 64  # the system message once
    assert sum(i.calls for i in items) == 2
    # the endpoint is remembered: the next batch is packed straight away
    await asyncio.gather(*(c.submit(chat(f"u{i}")) for i in range(4)))
    assert [r.endpoint for r in up.requests[2:]] == ["chat"]


async def test_several_item_requests_go_to_batch_caller_single_ones_to_caller() -> None:
    single, several = Upstream(), Upstream(native=False)
    c = BatchCollector(single, batch_caller=several, batch_size=3, window_s=1.0)
    await asyncio.gather(*(c.submit(chat(f"t{i}")) for i in range(3)))
    assert [r.endpoint for r in several.requests] == ["completions", "chat"] and single.requests == []


async def test_usage_is_shared_out_and_adds_up_to_the_call() -> None:
    up = Upstream()
    c = BatchCollector(up, batch_size=3, window_s=1.0)
    items = await asyncio.gather(
        *(c.submit(chat(t)) for t in ("a", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "cc"))
    )
    usages = [i.result().usage for i in items]
    assert all(u is not None for u in usages)
    assert (
        sum(u.prompt_tokens for u in usages if u) == 30
        and sum(u.completion_tokens for u in usages if u) == 15
    )
    assert (
        usages[1] is not None and usages[0] is not None and usages[1].prompt_tokens > usages[0].prompt_tokens
    )


async def test_duplicates_get_one_call_and_their_own_response_objects() -> None:
    up = Upstream()
    c = BatchCollector(up, batch_size=3, window_s=1.0)
    a, b, other = await asyncio.gather(c.submit(chat("same")), c.submit(chat("same")), c.submit(chat("x")))
    assert a.result().text == b.result().text and a.response is not b.response
    assert a.calls + b.calls + other.calls == 1


async def test_a_caller_that_leaves_does_not_disturb_the_batch() -> None:
    up = Upstream(delay=lambda: 0.05)
    c = BatchCollector(up, batch_size=3, window_s=0.01)
    leaver = asyncio.ensure_future(c.submit(chat("leaves")))
    stayers = [asyncio.ensure_future(c.submit(chat(f"s{i}"))) for i in range(2)]
    await asyncio.sleep(0.03)  # the batch is in flight
    leaver.cancel()
    done = await asyncio.gather(*stayers)
    assert [d.result().text for d in done] == [answer_of(f"You write code.\n\ns{i}") for i in range(2)]
    with pytest.raises(asyncio.CancelledError):
        await leaver


async def test_a_bug_below_reaches_every_item_instead_of_hanging_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bug in the batch")

    monkeypatch.setattr("pytest_iterate.batch.collector.batch_llm_call_results", broken)
    c = BatchCollector(Upstream(), batch_size=2, window_s=1.0)
    async with asyncio.timeout(5):
        items = await asyncio.gather(c.submit(chat("a")), c.submit(chat("b")))
    assert all(isinstance(i.error, RuntimeError) for i in items)


async def test_aclose_sends_what_is_collected_now() -> None:
    up = Upstream()
    c = BatchCollector(up, batch_size=8, window_s=60.0)
    pending = asyncio.ensure_future(c.submit(chat("waiting")))
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await c.aclose()
        assert (await pending).result().text.endswith("waiting>")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size=0 must be a whole number >= 1"),
        ({"batch_size": 2, "window_s": -1.0}, "window_s=-1.0 must be a number of seconds >= 0"),
        ({"batch_size": 2, "strategy": "fast"}, "strategy='fast' is not valid; valid values: auto, native"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BatchCollector(Upstream(), **kwargs)


async def test_batch_results_carry_a_system_message_per_strategy() -> None:
    up = Upstream(native=False)
    result = await batch_llm_call_results(["p1", "p2"], up, system="SYS", strategy="native")
    probe, packed = up.requests
    assert probe.prompt == ("SYS\n\np1", "SYS\n\np2")
    assert packed.messages[0] == {"role": "system", "content": "SYS"}
    assert result.served_by == ["packed", "packed"] and result.calls == [2, 0]
    single = await batch_llm_call_results(["p3"], up, system="SYS", strategy="concurrent")
    assert up.requests[-1].messages == (
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "p3"},
    )
    assert single.responses[0] is not None and single.responses[0].text == answer_of("p3")


async def test_a_pack_refused_as_too_long_is_halved_and_refusals_that_sent_nothing_count_nothing() -> None:
    from pytest_iterate.batch.call import report_sends
    from pytest_iterate.client.errors import ContextOverflow

    up = Upstream(native=False)
    sent: list[int] = []

    async def guarded(
        request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse:
        items = parse_packed_prompt(str(request.messages[-1]["content"])) or [""]
        if len(items) > 2:  # the window holds two items at most
            report_sends(0)
            raise ContextOverflow("too long together")
        report_sends(1)
        sent.append(len(items))
        return await up(request)

    result = await batch_llm_call_results(
        [f"t{i}" for i in range(8)], guarded, strategy="packed", pack_size=8
    )
    assert result.texts() == [answer_of(f"t{i}") for i in range(8)]
    assert sorted(sent) == [2, 2, 2, 2] and result.calls_made == 4 == sum(result.calls)


async def test_an_endpoint_whose_packed_answers_never_split_stops_getting_packs() -> None:
    from pytest_iterate.batch.call import EndpointCapabilities

    class NoSections(Upstream):
        async def __call__(
            self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
        ) -> LLMResponse:
            packed = request.endpoint == "chat" and parse_packed_prompt(str(request.messages[-1]["content"]))
            if packed:
                self.requests.append(request)
                return LLMResponse("Sure! Here are some thoughts on all of them.", "stop")
            return await super().__call__(request)

    up = NoSections(native=False)
    caps = EndpointCapabilities()
    packs: list[int] = []
    for round_ in range(5):
        before = len(up.requests)
        result = await batch_llm_call_results([f"r{round_}-{i}" for i in range(3)], up, capabilities=caps)
        assert result.texts() == [answer_of(f"r{round_}-{i}") for i in range(3)]  # every item answered alone
        packs.append(
            sum(
                1
                for r in up.requests[before:]
                if r.endpoint == "chat"
                and len(r.messages) == 1
                and parse_packed_prompt(str(r.messages[0]["content"])) is not None
            )
        )
    assert packs == [1, 1, 1, 0, 0] and caps.supports_packing("default") is False
