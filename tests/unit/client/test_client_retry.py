"""Every retry branch of issue 2, over respx (httpx transport), with sleeps injected."""

from __future__ import annotations

import email.utils
import json
import random
import time

import httpx
import pytest
import respx

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import (
    BadResponse,
    ClientError,
    ConfigError,
    ConnectError,
    HTTPStatusError,
    RateLimited,
    RequestTimeout,
    ServerError,
    StreamError,
    error_for_status,
)
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.retry import RETRY_STATUSES, retry_reason
from pytest_iterate.client.types import LLMRequest

BASE = "http://api.test/v1"
CHAT = BASE + "/chat/completions"
REQ = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)


def ok_json(text: str = "hello") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        },
    )


def sse(*events: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(events))


def delta(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def metrics() -> IterateMetrics:
    return IterateMetrics()


@pytest.fixture
async def client(sleeps: Sleeps, metrics: IterateMetrics):  # type: ignore[no-untyped-def]
    cfg = IterateConfig(base_url=BASE, transport="httpx", backoff_initial_s=0.5, backoff_max_s=4.0)
    async with LLMClient(cfg, metrics=metrics, sleep=sleeps, rng=random.Random(7)) as c:
        yield c


def retries(metrics: IterateMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("iterate_retries_total", {"reason": reason}) or 0.0


@respx.mock
async def test_429_with_retry_after_seconds(
    client: LLMClient, sleeps: Sleeps, metrics: IterateMetrics
) -> None:
    route = respx.post(CHAT).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "1"}), ok_json()])
    resp = await client.call(REQ)
    assert resp.text == "hello" and resp.attempts == 2 and route.call_count == 2
    assert sleeps.calls == [1.0]
    assert retries(metrics, "429") == 1


@respx.mock
async def test_429_with_retry_after_ms(client: LLMClient, sleeps: Sleeps) -> None:
    respx.post(CHAT).mock(
        side_effect=[httpx.Response(429, headers={"retry-after-ms": "250", "Retry-After": "9"}), ok_json()]
    )
    resp = await client.call(REQ)
    assert resp.attempts == 2 and sleeps.calls == [0.25]


@respx.mock
async def test_429_with_http_date(client: LLMClient, sleeps: Sleeps) -> None:
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    respx.post(CHAT).mock(side_effect=[httpx.Response(429, headers={"Retry-After": when}), ok_json()])
    resp = await client.call(REQ)
    assert resp.attempts == 2
    assert len(sleeps.calls) == 1 and 3.0 <= sleeps.calls[0] <= 5.0


@respx.mock
async def test_retry_after_is_capped(sleeps: Sleeps) -> None:
    cfg = IterateConfig(base_url=BASE, transport="httpx", retry_after_cap_s=2.0)
    respx.post(CHAT).mock(side_effect=[httpx.Response(429, headers={"Retry-After": "600"}), ok_json()])
    async with LLMClient(cfg, sleep=sleeps) as c:
        assert (await c.call(REQ)).attempts == 2
    assert sleeps.calls == [2.0]


@respx.mock
async def test_429_exhausts_attempts_and_raises_rate_limited(client: LLMClient, sleeps: Sleeps) -> None:
    route = respx.post(CHAT).mock(
        return_value=httpx.Response(
            429, json={"error": {"message": "slow down", "code": "rate_limit_exceeded"}}
        )
    )
    with pytest.raises(RateLimited) as info:
        await client.call(REQ)
    assert route.call_count == 3 and len(sleeps.calls) == 2
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded"
    assert "slow down" in str(info.value) and CHAT in str(info.value)
    # full jitter: each wait within [0, initial * 2**(n-1)]
    assert 0 <= sleeps.calls[0] <= 0.5 and 0 <= sleeps.calls[1] <= 1.0


@pytest.mark.parametrize("status", [500, 502, 503, 529])
@respx.mock
async def test_5xx_retried_then_ok(
    client: LLMClient, sleeps: Sleeps, metrics: IterateMetrics, status: int
) -> None:
    route = respx.post(CHAT).mock(
        side_effect=[httpx.Response(status), httpx.Response(status), ok_json("fine")]
    )
    resp = await client.call(REQ)
    assert resp.text == "fine" and resp.attempts == 3 and route.call_count == 3
    assert len(sleeps.calls) == 2
    assert retries(metrics, "5xx") == 2


@respx.mock
async def test_5xx_every_time_raises_server_error(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(return_value=httpx.Response(503, text="upstream down"))
    with pytest.raises(ServerError) as info:
        await client.call(REQ)
    assert route.call_count == 3 and info.value.status == 503


@respx.mock
async def test_read_timeout_retried(client: LLMClient, metrics: IterateMetrics) -> None:
    route = respx.post(CHAT).mock(side_effect=[httpx.ReadTimeout("slow"), ok_json()])
    resp = await client.call(REQ)
    assert resp.attempts == 2 and route.call_count == 2
    assert retries(metrics, "timeout") == 1


@respx.mock
async def test_read_timeout_every_time_raises_request_timeout(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RequestTimeout):
        await client.call(REQ)
    assert route.call_count == 3


@respx.mock
async def test_connection_reset_retried(client: LLMClient, metrics: IterateMetrics) -> None:
    route = respx.post(CHAT).mock(
        side_effect=[
            httpx.ConnectError("[Errno 104] Connection reset by peer"),
            httpx.ReadError("reset"),
            ok_json(),
        ]
    )
    resp = await client.call(REQ)
    assert resp.attempts == 3 and route.call_count == 3
    assert retries(metrics, "connect") == 2


@respx.mock
async def test_connection_reset_every_time_raises_connect_error(client: LLMClient) -> None:
    respx.post(CHAT).mock(side_effect=httpx.ConnectError("reset"))
    with pytest.raises(ConnectError):
        await client.call(REQ)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
@respx.mock
async def test_other_4xx_never_retried(client: LLMClient, sleeps: Sleeps, status: int) -> None:
    route = respx.post(CHAT).mock(
        return_value=httpx.Response(
            status, json={"error": {"message": "nope", "code": "context_length_exceeded"}}
        )
    )
    with pytest.raises(ClientError) as info:
        await client.call(REQ)
    assert route.call_count == 1 and sleeps.calls == []
    assert info.value.status == status and info.value.code == "context_length_exceeded"


@pytest.mark.parametrize("status", [408, 409])
@respx.mock
async def test_408_409_retried(client: LLMClient, status: int) -> None:
    route = respx.post(CHAT).mock(side_effect=[httpx.Response(status), ok_json()])
    assert (await client.call(REQ)).attempts == 2 and route.call_count == 2


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
@respx.mock
async def test_every_retryable_status_is_retried_with_its_reason(
    client: LLMClient, metrics: IterateMetrics, status: int
) -> None:
    route = respx.post(CHAT).mock(side_effect=[httpx.Response(status), ok_json("again")])
    resp = await client.call(REQ)
    assert resp.text == "again" and resp.attempts == 2 and route.call_count == 2
    assert retries(metrics, RETRY_STATUSES[status]) == 1


@pytest.mark.parametrize("status", [501, 505, 507, 511, 599, 400, 418, 451])
@respx.mock
async def test_a_status_a_retry_cannot_fix_fails_at_once(
    client: LLMClient, sleeps: Sleeps, status: int
) -> None:
    route = respx.post(CHAT).mock(side_effect=[httpx.Response(status, text="no"), ok_json()])
    with pytest.raises(HTTPStatusError) as info:
        await client.call(REQ)
    assert info.value.status == status and route.call_count == 1 and sleeps.calls == []


def test_the_table_is_exactly_the_statuses_that_can_succeed_on_retry() -> None:
    assert sorted(RETRY_STATUSES) == [408, 409, 425, 429, 500, 502, 503, 504, 529]
    for status in range(100, 600):
        exc = error_for_status(status, url=CHAT)
        assert (retry_reason(exc) is not None) == (status in RETRY_STATUSES), status


@respx.mock
async def test_malformed_json_retried_then_raises_bad_response(
    client: LLMClient, metrics: IterateMetrics
) -> None:
    route = respx.post(CHAT).mock(return_value=httpx.Response(200, content=b'{"choices": [{"mess'))
    with pytest.raises(BadResponse) as info:
        await client.call(REQ)
    assert route.call_count == 3
    assert info.value.status == 200 and info.value.body.startswith(b'{"choices"')
    assert "not JSON" in str(info.value)
    assert retries(metrics, "bad_response") == 2


@respx.mock
async def test_malformed_json_once_then_ok(client: LLMClient) -> None:
    respx.post(CHAT).mock(side_effect=[httpx.Response(200, content=b"<html>oops"), ok_json()])
    assert (await client.call(REQ)).attempts == 2


@respx.mock
async def test_empty_choices_is_bad_response_not_retried(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(return_value=httpx.Response(200, json={"choices": []}))
    with pytest.raises(BadResponse, match="no choices") as info:
        await client.call(REQ)
    assert route.call_count == 1 and not isinstance(info.value, StreamError)


@respx.mock
async def test_stream_cut_before_done_retried(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(
        side_effect=[
            sse(delta("par"), delta("tial")),
            sse(delta("whole "), delta("answer"), b"data: [DONE]\n\n"),
        ]
    )
    resp = await client.call(REQ.replace(stream=True))
    assert resp.text == "whole answer" and resp.attempts == 2 and route.call_count == 2
    assert resp.chunks == ["whole ", "answer"]


@respx.mock
async def test_stream_cut_every_time_raises_stream_error(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(return_value=sse(delta("par")))
    with pytest.raises(StreamError, match=r"before \[DONE\]"):
        await client.call(REQ.replace(stream=True))
    assert route.call_count == 3


@respx.mock
async def test_error_payload_inside_stream(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(
        return_value=sse(
            delta("a"), b'data: {"error": {"message": "model overloaded", "type": "server_error"}}\n\n'
        )
    )
    with pytest.raises(StreamError, match="model overloaded"):
        await client.call(REQ.replace(stream=True))
    assert route.call_count == 3


@respx.mock
async def test_error_payload_then_good_stream(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(
        side_effect=[sse(b'event: error\ndata: {"message": "x"}\n\n'), sse(delta("ok"), b"data: [DONE]\n\n")]
    )
    resp = await client.call(REQ.replace(stream=True))
    assert resp.text == "ok" and resp.attempts == 2 and route.call_count == 2


@respx.mock
async def test_stream_not_retried_once_deltas_were_delivered(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(return_value=sse(delta("seen")))
    got: list[str] = []
    with pytest.raises(StreamError):
        await client.call(REQ.replace(stream=True), on_delta=got.append)
    assert route.call_count == 1 and got == ["seen"]


@respx.mock
async def test_max_attempts_one_means_no_retry(sleeps: Sleeps) -> None:
    route = respx.post(CHAT).mock(return_value=httpx.Response(503))
    async with LLMClient(IterateConfig(base_url=BASE, transport="httpx", max_attempts=1), sleep=sleeps) as c:
        with pytest.raises(ServerError):
            await c.call(REQ)
    assert route.call_count == 1 and sleeps.calls == []


@respx.mock
async def test_api_key_sent_but_never_in_errors(monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps) -> None:
    monkeypatch.setenv("ITERATE_TEST_KEY", "sk-very-secret")
    route = respx.post(CHAT).mock(
        return_value=httpx.Response(
            401, json={"error": {"message": "bad key sk-very-secret", "code": "invalid_api_key"}}
        )
    )
    cfg = IterateConfig(base_url=BASE, transport="httpx", api_key_env="ITERATE_TEST_KEY")
    async with LLMClient(cfg, sleep=sleeps) as c:
        with pytest.raises(ClientError) as info:
            await c.call(REQ)
        assert "sk-very-secret" not in repr(c)
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-very-secret"
    assert "sk-very-secret" not in str(info.value) and b"sk-very-secret" not in info.value.body


def test_missing_required_api_key_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ITERATE_ABSENT_KEY", raising=False)
    cfg = IterateConfig(base_url=BASE, api_key_env="ITERATE_ABSENT_KEY", api_key_required=True)
    with pytest.raises(ConfigError, match="ITERATE_ABSENT_KEY"):
        LLMClient(cfg)


@respx.mock
async def test_completions_list_prompt_fills_texts_in_index_order(client: LLMClient) -> None:
    respx.post(BASE + "/completions").mock(
        return_value=httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 1, "text": "B", "finish_reason": "stop"},
                    {"index": 0, "text": "A", "finish_reason": "stop"},
                ]
            },
        )
    )
    resp = await client.call(LLMRequest(prompt=("a", "b"), endpoint="completions"))
    assert resp.texts == ["A", "B"] and resp.text == "A"


@respx.mock
async def test_the_mock_host_is_nothing_special_to_the_client() -> None:
    from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport
    from pytest_iterate.client.transport.httpx_transport import HttpxTransport
    from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL

    respx.post(MOCK_BASE_URL + "/chat/completions").mock(return_value=ok_json("mocked"))
    async with LLMClient(IterateConfig(base_url=MOCK_BASE_URL)) as c:
        assert isinstance(c.transport, AiohttpTransport)  # the configured transport, whatever the host
    async with LLMClient(IterateConfig(base_url=MOCK_BASE_URL, transport="httpx")) as c:
        assert isinstance(c.transport, HttpxTransport)
        assert (await c.call(REQ)).text == "mocked"


def test_the_client_layer_knows_nothing_of_the_test_doubles() -> None:
    from pathlib import Path

    import pytest_iterate.client

    root = Path(pytest_iterate.client.__file__).parent
    sources = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in root.rglob("*.py")}
    assert "client.py" in sources and "transport/aiohttp_transport.py" in sources
    for name, text in sources.items():
        assert "pytest_iterate.doubles" not in text and "mock.iterate.invalid" not in text, name


@respx.mock
async def test_saturated_client_answers_busy_fast_and_does_not_retry(sleeps: Sleeps) -> None:
    import asyncio

    from pytest_iterate.client.errors import Busy

    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return ok_json()

    route = respx.post(CHAT).mock(side_effect=slow)
    metrics = IterateMetrics()
    cfg = IterateConfig(base_url=BASE, transport="httpx", max_concurrent_requests=1, max_queue=0)
    async with LLMClient(cfg, metrics=metrics, sleep=sleeps) as c:
        first = asyncio.create_task(c.call(REQ))
        await asyncio.sleep(0.01)
        assert c.throttle.inflight == 1
        started = time.perf_counter()
        with pytest.raises(Busy) as info:
            await c.call(REQ)
        assert time.perf_counter() - started < 0.05
        assert info.value.retry_after_s > 0 and sleeps.calls == []
        gate.set()
        assert (await first).text == "hello"
    assert route.call_count == 1
    get = metrics.registry.get_sample_value
    assert get("iterate_requests_total", {"model": "gpt-4o-mini", "outcome": "busy"}) == 1
    assert get("iterate_requests_total", {"model": "gpt-4o-mini", "outcome": "ok"}) == 1
    assert get("iterate_inflight_requests") == 0


@respx.mock
async def test_raw_call_is_one_attempt_without_retry(client: LLMClient) -> None:
    route = respx.post(CHAT).mock(side_effect=[httpx.Response(503), ok_json()])
    with pytest.raises(ServerError):
        await client.raw_call(REQ)
    assert route.call_count == 1
    assert (await client.raw_call(REQ)).text == "hello"
