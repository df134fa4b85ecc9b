"""batch_llm_call: order, failures in place, dedup, bounded concurrency, strategies, probe."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from pytest_iterate.batch.call import (
    EndpointCapabilities,
    batch_llm_call,
    batch_llm_call_results,
)
from pytest_iterate.batch.packing import item_header, parse_packed_prompt
from pytest_iterate.client.errors import ClientError, ConfigError, ServerError
from pytest_iterate.client.types import LLMRequest, LLMResponse


def answer_of(prompt: str) -> str:
    return f"answer to <{prompt}>"


class FakeEndpoint:
    """A Caller that answers plain, packed and list-prompt requests like a server would."""

    def __init__(
        self,
        *,
        native: bool = True,
        latency: Callable[[], float] = lambda: 0.0,
        fail: set[str] | frozenset[str] = frozenset(),
        pack_reply: Callable[[list[str]], str] | None = None,
    ) -> None:
        self.native, self.latency, self.fail = native, latency, set(fail)
        self.pack_reply = pack_reply
        self.requests: list[LLMRequest] = []
        self.inflight = self.max_inflight = 0

    async def __call__(
        self, request: LLMRequest, /, *, on_delta: Callable[[str], None] | None = None
    ) -> LLMResponse:
        self.requests.append(request)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            await asyncio.sleep(self.latency())
            if request.endpoint == "completions":
                assert isinstance(request.prompt, tuple)
                if not self.native:
                    raise ServerError("http://fake/v1 answered 500", status=500)
                texts = [answer_of(p) for p in request.prompt]
                return LLMResponse(text=texts[0], finish_reason="stop", texts=texts)
            content = str(request.messages[-1]["content"])
            items = parse_packed_prompt(content)
            if items is not None:
                if self.pack_reply is not None:
                    return LLMResponse(text=self.pack_reply(items), finish_reason="stop")
                body = "\n".join(f"{item_header(i)}\n{answer_of(p)}" for i, p in enumerate(items, 1))
                return LLMResponse(text=body, finish_reason="stop")
            if content in self.fail:
                raise ClientError("http://fake/v1 answered 400", status=400)
            return LLMResponse(text=answer_of(content), finish_reason="stop")
        finally:
            self.inflight -= 1

    def kinds(self) -> list[str]:
        out = []
        for r in self.requests:
            if r.endpoint == "completions":
                out.append("native")
            elif parse_packed_prompt(str(r.messages[-1]["content"])) is not None:
                out.append("packed")
            else:
                out.append("single")
        return out


PROMPTS = [f"question {i}" for i in range(20)]


@pytest.mark.parametrize("strategy", ["concurrent", "packed", "native", "auto"])
async def test_order_preserved_under_random_latency(strategy: str) -> None:
    rng = random.Random(42)
    fake = FakeEndpoint(latency=lambda: rng.uniform(0, 0.02))
    out = await batch_llm_call(PROMPTS, fake, strategy=strategy, pack_size=3)  # type: ignore[arg-type]
    assert out == [answer_of(p) for p in PROMPTS]


async def test_failing_item_does_not_lose_the_others() -> None:
    fake = FakeEndpoint(fail={"question 3", "question 11"})
    result = await batch_llm_call_results(PROMPTS, fake, strategy="concurrent")
    for i, p in enumerate(PROMPTS):
        if i in (3, 11):
            assert result.results[i] is None and isinstance(result.errors[i], ClientError)
        else:
            assert result.results[i] == answer_of(p) and result.errors[i] is None
    assert not result.ok
    with pytest.raises(ClientError):
        await batch_llm_call(PROMPTS, fake, strategy="concurrent")


async def test_duplicates_sent_once_and_calls_saved_reported() -> None:
    prompts = ["a", "b", "a", "c", "b", "a"]
    fake = FakeEndpoint()
    result = await batch_llm_call_results(prompts, fake, strategy="concurrent")
    assert result.texts() == [answer_of(p) for p in prompts]
    assert result.calls_made == 3 == len(fake.requests) and result.calls_saved == 3


async def test_concurrency_is_bounded() -> None:
    fake = FakeEndpoint(latency=lambda: 0.005)
    await batch_llm_call(PROMPTS, fake, strategy="concurrent", concurrency=4)
    assert fake.max_inflight == 4


async def test_packed_split_survives_extra_text_around_items() -> None:
    def chatty(items: list[str]) -> str:
        parts = ["Sure! Here are your answers:\n"]
        for i, p in enumerate(items, 1):
            parts.append(f"**Item {i}:** {answer_of(p)}\n\n---")
        parts.append("Let me know if you need more help.")
        return "\n".join(parts)

    fake = FakeEndpoint(pack_reply=chatty)
    prompts = PROMPTS[:4]
    result = await batch_llm_call_results(prompts, fake, strategy="packed", pack_size=4)
    # the preamble, the separators and the closing remark after the last "---" are dropped
    assert result.texts() == [answer_of(p) for p in prompts]
    assert result.calls_made == 1 and result.calls_saved == 3


async def test_items_that_fail_to_split_are_retried_one_by_one() -> None:
    def drops_second(items: list[str]) -> str:
        return "\n".join(f"### ITEM {i}\n{answer_of(p)}" for i, p in enumerate(items, 1) if i != 2)

    fake = FakeEndpoint(pack_reply=drops_second)
    prompts = PROMPTS[:5]
    result = await batch_llm_call_results(prompts, fake, strategy="packed", pack_size=5)
    assert result.texts() == [answer_of(p) for p in prompts]
    assert fake.kinds() == ["packed", "single"] and result.strategies == {"packed": 4, "concurrent": 1}


async def test_native_probe_is_remembered_per_endpoint() -> None:
    caps = EndpointCapabilities()
    llama = FakeEndpoint(native=False)  # answers 500 to a list prompt
    out = await batch_llm_call(
        PROMPTS[:6], llama, strategy="auto", pack_size=3, capabilities=caps, endpoint="http://llama/v1"
    )
    assert out == [answer_of(p) for p in PROMPTS[:6]]
    assert caps.supports_native("http://llama/v1") is False
    assert llama.kinds() == ["native", "packed", "packed"]  # one probe, then packed
    again = FakeEndpoint(native=False)
    await batch_llm_call(
        PROMPTS[:6], again, strategy="auto", pack_size=3, capabilities=caps, endpoint="http://llama/v1"
    )
    assert "native" not in again.kinds()  # never probed twice

    vllm = FakeEndpoint(native=True)
    result = await batch_llm_call_results(
        PROMPTS[:7], vllm, strategy="auto", pack_size=3, capabilities=caps, endpoint="http://vllm/v1"
    )
    assert result.texts() == [answer_of(p) for p in PROMPTS[:7]]
    assert caps.supports_native("http://vllm/v1") is True
    assert vllm.kinds() == ["native", "native", "single"]  # the probe, one more group, a leftover
    assert result.calls_made == 3 and result.calls_saved == 4


async def test_packed_call_failure_falls_back_to_single_calls() -> None:
    class PackFails(FakeEndpoint):
        async def __call__(self, request: LLMRequest, /, *, on_delta=None) -> LLMResponse:  # type: ignore[no-untyped-def]
            if parse_packed_prompt(str(request.messages[-1]["content"])) is not None:
                self.requests.append(request)
                raise ServerError("http://fake/v1 answered 503", status=503)
            return await super().__call__(request, on_delta=on_delta)

    fake = PackFails()
    out = await batch_llm_call(PROMPTS[:3], fake, strategy="packed")
    assert out == [answer_of(p) for p in PROMPTS[:3]]
    assert fake.kinds() == ["packed", "single", "single", "single"]


async def test_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match="strategy='fast'"):
        await batch_llm_call(["a"], FakeEndpoint(), strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="concurrency=0"):
        await batch_llm_call(["a"], FakeEndpoint(), concurrency=0)
    with pytest.raises(ConfigError, match="caller or a client"):
        await batch_llm_call(["a"])
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) pack_sise"):
        await batch_llm_call(["a"], FakeEndpoint(), pack_sise=3)  # type: ignore[call-arg]
