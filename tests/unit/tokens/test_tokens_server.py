"""The probe and the exact counter against loopback servers shaped like llama.cpp, vLLM, TGI,
llama-cpp-python and an endpoint with none of their routes (real HTTP on 127.0.0.1)."""

# ruff: noqa: RUF001  (texts in many scripts on purpose: full-width commas, Greek, Arabic)

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport
from pytest_iterate.doubles.foreign import ForeignServer, ForeignTokenizer
from pytest_iterate.tokens import EndpointTokens, ScriptLearner, TokenCounter, TransportHTTP, probe_server
from pytest_iterate.tokens.server import ROUTES, CountError, HTTPReply, ServerTokens, server_root

StartForeign = Callable[..., Awaitable[ForeignServer]]  # the ``foreign`` fixture (conftest.py)

FOREIGN = ForeignTokenizer()


@pytest.fixture
async def http() -> Any:
    transport = AiohttpTransport(IterateConfig())
    yield TransportHTTP(transport)
    await transport.aclose()


@pytest.mark.parametrize(
    ("kind", "window", "source", "path"),
    [
        ("llama.cpp", 2048, "GET /props n_ctx", "/tokenize"),
        ("vllm", 4096, "GET /v1/models max_model_len", "/tokenize"),
        ("tgi", 3000, "GET /info max_total_tokens", "/tokenize"),
        ("llama-cpp-python", None, None, "/extras/tokenize/count"),
    ],
)
async def test_probe_finds_the_window_and_the_tokenize_route(
    foreign: StartForeign, http: TransportHTTP, kind: str, window: int | None, source: str | None, path: str
) -> None:
    server = await foreign(kind=kind, window=window or 2048)
    info = await probe_server(http, server.base_url, "foreign")
    assert (info.kind, info.window, info.window_source) == (kind, window, source)
    assert info.route is not None and info.route.path == path and info.exact
    assert info.prompt_limit == (2999 if kind == "tgi" else None)
    assert kind in info.describe()


async def test_probe_of_an_endpoint_without_any_route_finds_nothing_and_asks_little(
    foreign: StartForeign, http: TransportHTTP
) -> None:
    server = await foreign(kind="openai")
    info = await probe_server(http, server.base_url, "foreign")
    assert info.route is None and info.window is None and not info.exact
    assert info.notes == ("/extras/tokenize/count: 404",)
    assert sum(server.requests.values()) == 4  # /props, /v1/models, /info, one tokenize attempt
    assert "per-script estimates" in info.describe()


async def test_probe_gives_up_on_a_silent_server_within_its_timeout(http: TransportHTTP) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        start = time.monotonic()
        info = await probe_server(http, f"http://127.0.0.1:{port}/v1", "m", timeout_s=0.2)
        elapsed = time.monotonic() - start
    finally:
        release.set()
        await runner.cleanup()
    assert info.route is None and info.window is None
    assert elapsed < 5.0  # two rounds of 0.2 s timeouts, with room for a loaded machine


async def test_probe_takes_no_answer_of_the_wrong_shape() -> None:
    async def odd(method: str, url: str, body: Any, *, timeout_s: float) -> HTTPReply:
        if url.endswith("/props"):
            return HTTPReply(200, b'{"n_ctx": "big"}')  # not a number
        if url.endswith("/tokenize/count"):
            return HTTPReply(200, b'{"count": -3}')
        return HTTPReply(200, b"<html>welcome</html>")

    info = await probe_server(odd, "http://x/v1", "m")
    assert info.route is None and info.window is None


def test_server_root_drops_the_api_path() -> None:
    assert server_root("http://127.0.0.1:8080/v1") == "http://127.0.0.1:8080"
    assert server_root("http://h/proxy/v1/") == "http://h/proxy"
    assert server_root("http://h/openai") == "http://h/openai"


async def _server_tokens(
    foreign: StartForeign, http: TransportHTTP, **kwargs: Any
) -> tuple[Any, ServerTokens]:
    server = await foreign(kind="llama.cpp", **kwargs)
    info = await probe_server(http, server.base_url, "foreign")
    return server, ServerTokens(http, server_root(server.base_url), info, model="foreign")


async def test_exact_counts_are_cached_by_digest(foreign: StartForeign, http: TransportHTTP) -> None:
    server, tokens = await _server_tokens(foreign, http)
    text = "每个操作都会校验参数 and English 😀 2024"
    before = server.tokenize_calls
    assert await tokens.count(text) == FOREIGN.count(text)
    assert await tokens.count(text) == FOREIGN.count(text)
    assert tokens.known(text) == FOREIGN.count(text) and tokens.known("never counted") is None
    assert server.tokenize_calls == before + 1 and tokens.hits == 1


async def test_identical_texts_in_flight_share_one_call(foreign: StartForeign, http: TransportHTTP) -> None:
    server, tokens = await _server_tokens(foreign, http, tokenize_latency_s=0.05)
    before = server.tokenize_calls
    counts = await asyncio.gather(*(tokens.count("same text " * 50) for _ in range(10)))
    assert set(counts) == {FOREIGN.count("same text " * 50)}
    assert server.tokenize_calls == before + 1


async def test_count_many_sends_the_texts_of_a_request_together(
    foreign: StartForeign, http: TransportHTTP
) -> None:
    _server, tokens = await _server_tokens(foreign, http, tokenize_latency_s=0.2)
    texts = [f"text number {i} " * 20 for i in range(6)]
    start = time.monotonic()
    counts = await tokens.count_many([*texts, texts[0]])
    elapsed = time.monotonic() - start
    assert counts == {t: FOREIGN.count(t) for t in texts}
    assert elapsed < 6 * 0.2  # concurrent, not one after the other


async def test_exact_counts_teach_the_per_script_estimate(foreign: StartForeign, http: TransportHTTP) -> None:
    _server, tokens = await _server_tokens(foreign, http)
    learner, counter = ScriptLearner(), TokenCounter()
    tokens.learner, tokens.counter, tokens.endpoint_key = learner, counter, "e"
    await tokens.count("中文的字符和标点符号，" * 40)
    assert learner.observations("e", "foreign") == 1


async def test_failures_raise_and_three_in_a_row_turn_counting_off(
    foreign: StartForeign, http: TransportHTTP
) -> None:
    server, tokens = await _server_tokens(foreign, http)
    await server.stop()  # the endpoint goes away after the probe
    for i in range(3):
        assert tokens.active
        with pytest.raises(CountError):
            await tokens.count(f"text {i}")
    assert not tokens.active and tokens.failures == 3


def test_template_overhead_per_model_and_shape() -> None:
    tokens = ServerTokens(lambda *a, **k: None, "http://x", probe_info())  # type: ignore[arg-type]
    assert tokens.template("m", ("system", "user")) is None
    tokens.learn_template("m", ("system", "user"), 14)
    tokens.learn_template("m", ("system", "user"), 13)
    tokens.learn_template("m", ("user",), 30)
    assert tokens.template("m", ("system", "user")) == 14  # the most seen
    assert tokens.template("m", ("user",)) == 30 and tokens.template("other", ("user",)) is None


def probe_info() -> Any:
    from pytest_iterate.tokens.server import ServerInfo

    return ServerInfo("llama.cpp", 2048, "x", None, ROUTES["llama.cpp"])


async def test_endpoint_tokens_probe_once_and_remember_failure(
    foreign: StartForeign, http: TransportHTTP
) -> None:
    server = await foreign(kind="openai")
    tokens = EndpointTokens(http, server.base_url, model="foreign")
    results = await asyncio.gather(*(tokens.ready() for _ in range(10)))
    assert results == [None] * 10 and tokens.probes == 1
    asked = sum(server.requests.values())
    assert await tokens.ready() is None
    assert sum(server.requests.values()) == asked  # never asked again


async def test_endpoint_tokens_estimate_mode_never_probes(foreign: StartForeign, http: TransportHTTP) -> None:
    server = await foreign(kind="llama.cpp")
    tokens = EndpointTokens(http, server.base_url, mode="estimate")
    assert await tokens.ready() is None and tokens.probes == 0 and not server.requests
    with pytest.raises(ValueError, match="'exact-ish' is not valid; valid values: auto, estimate"):
        EndpointTokens(http, server.base_url, mode="exact-ish")


async def test_the_api_key_goes_to_the_probe_and_never_into_a_repr(
    foreign: StartForeign, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await foreign(kind="llama.cpp", api_key="sk-probe-secret")
    monkeypatch.setenv("PROBE_TEST_KEY", "sk-probe-secret")
    config = IterateConfig(base_url=server.base_url, api_key_env="PROBE_TEST_KEY")
    async with LLMClient(config) as client:
        keyed = TransportHTTP.for_client(client)  # the client's transport and Authorization value
        assert keyed is not None
        info = await probe_server(keyed, server.base_url, "foreign")
        assert info.exact and server.unauthorized == 0
        assert "sk-probe-secret" not in repr(keyed) + repr(vars(keyed))
        bare = await probe_server(TransportHTTP(client.transport), server.base_url, "foreign")
        assert not bare.exact and server.unauthorized > 0  # without the key: nothing, and no crash
