"""Where the client's credentials go (the Authorization header) and where they never show."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ConfigError, ConnectError, ServerError, StreamError
from pytest_iterate.client.secret import Secret
from pytest_iterate.client.types import LLMRequest

KEY = "sk-cred-test-5b8e61"
KEY_ENV = "ITERATE_CRED_TEST_KEY"
REQ = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)
OK = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def config(base_url: str, **kw: object) -> IterateConfig:
    return IterateConfig(base_url=base_url, transport="httpx", api_key_env=KEY_ENV, max_attempts=1, **kw)  # type: ignore[arg-type]


@respx.mock
async def test_the_key_goes_out_as_bearer_and_the_headers_passed_around_never_hold_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    route = respx.post("http://api.test/v1/chat/completions").mock(return_value=httpx.Response(200, json=OK))
    async with LLMClient(config("http://api.test/v1")) as client:
        assert (await client.call(REQ)).text == "ok"
        for headers in (client._headers, client._stream_headers):
            assert "authorization" not in {k.lower() for k in headers}
        assert KEY not in repr(client) and KEY not in repr(vars(client.transport))
    assert route.calls[0].request.headers["authorization"] == f"Bearer {KEY}"


@respx.mock
async def test_url_credentials_become_basic_auth_and_leave_the_url() -> None:
    url = "https://llm.example/v1"
    route = respx.post(url + "/chat/completions").mock(return_value=httpx.Response(200, json=OK))
    async with LLMClient(config(f"https://bob:{KEY}@llm.example/v1")) as client:
        assert client.base_url == url and repr(client) == f"LLMClient(base_url={url!r}, model='gpt-4o-mini')"
        assert (await client.call(REQ)).text == "ok"
    sent = route.calls[0].request
    assert sent.url == "https://llm.example/v1/chat/completions"  # no user info on the wire's URL
    assert sent.headers["authorization"] == Secret.basic("bob", KEY).reveal()


@respx.mock
async def test_errors_never_name_the_url_credentials() -> None:
    respx.post("https://llm.example/v1/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    async with LLMClient(config(f"https://bob:{KEY}@llm.example/v1")) as client:
        with pytest.raises(ConnectError) as info:
            await client.call(REQ)
    assert KEY not in str(info.value) and KEY not in str(info.value.url)
    assert "https://llm.example/v1/chat/completions" in str(info.value)


def test_url_credentials_and_an_api_key_together_are_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-other")
    with pytest.raises(ConfigError, match=f"'{KEY_ENV}' holds an API key.*keep one") as info:
        LLMClient(config(f"https://bob:{KEY}@llm.example/v1"))
    assert KEY not in str(info.value) and "https://***@llm.example/v1" in str(info.value)


@respx.mock
async def test_a_key_echoed_in_an_error_body_or_a_stream_error_event_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    event = {"error": {"message": f"bad key {KEY}", "type": "auth"}}
    respx.post("http://api.test/v1/chat/completions").mock(
        side_effect=[
            httpx.Response(503, json={"error": {"message": f"upstream saw Bearer {KEY}"}}),
            httpx.Response(200, content=b"data: " + json.dumps(event).encode() + b"\n\n"),
        ]
    )
    async with LLMClient(config("http://api.test/v1")) as client:
        with pytest.raises(ServerError) as status:
            await client.call(REQ)
        with pytest.raises(StreamError) as stream:
            await client.call(REQ.replace(stream=True))
    for err in (status.value, stream.value):
        assert KEY not in str(err) and KEY.encode() not in err.body
    assert "upstream saw ***" in str(status.value) and "bad key ***" in str(stream.value)
