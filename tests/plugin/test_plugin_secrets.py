"""The API key never shows: not in any traceback pytest prints, the JUnit XML, JSON logs or a cassette.

A user's tests call ``llm_client`` (and ``llm_pipeline`` with JSON logs on) with a
sentinel key set in the environment variable named by ``--iterate-api-key-env``:
one against a closed port on 127.0.0.1, one against a server that accepts the request
and never answers (a timeout before the status line). They fail, and pytest prints
their tracebacks with every frame's arguments (``--tb=auto``), every frame's locals
(``--tb=long -l``, ``--showlocals``) and the same into ``--junitxml``; the sentinel
must appear nowhere, for both transports. The silent server checks that the key was
really sent, so the test cannot pass because no key was in play.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.transport.aiohttp_transport import AiohttpTransport
from pytest_iterate.client.transport.httpx_transport import HttpxTransport
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.cassettes import cassette_transport

pytest_plugins = ["pytester"]

SENTINEL = "sk-SENTINEL-7c1f0e9a4b2d46d8a35e"
KEY_ENV = "SENTINEL_LLM_KEY"
TRANSPORTS = ["aiohttp", "httpx"]
TB_MODES = [["--tb=auto"], ["--tb=long", "-l"], ["--showlocals"]]


class SilentServer:
    """Accepts connections on 127.0.0.1, reads each request head, never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            head = b""
            conn.settimeout(5)
            try:
                while b"\r\n\r\n" not in head:
                    part = conn.recv(4096)
                    if not part:
                        break
                    head += part
            except OSError:
                pass
            self.heads.append(head)

    def wait_for(self, n: int, timeout_s: float = 10.0) -> int:
        """How many request heads arrived, waiting up to ``timeout_s`` for ``n`` (the thread lags)."""
        deadline = time.monotonic() + timeout_s
        while len(self.heads) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.heads)

    def close(self) -> None:
        for sock in (self.sock, *self._conns):  # shutdown wakes a blocked accept() or recv()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(5)


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture(autouse=True)
def _sentinel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ITERATE") or name.endswith("API_KEY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(KEY_ENV, SENTINEL)


USER_TESTS = """
import pytest
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.pipeline.design import DesignRequest

REQ = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)

async def test_refused(llm_client):
    await llm_client.call(REQ)

async def test_refused_stream(llm_client):
    async for _ in llm_client.stream(REQ):
        pass

async def test_pipeline_with_json_logs(llm_pipeline):
    design = DesignRequest.from_json({"id": "d1", "title": "Stack", "requirements": ["push"]})
    result = await llm_pipeline.run(design)
    assert result.ok, result.error
"""

SILENT_TESTS = """
import pytest
from pytest_iterate.client.types import LLMRequest

REQ = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)

@pytest.fixture
def iterate_config(iterate_config):
    return iterate_config.replace(base_url="http://127.0.0.1:%d/v1")

async def test_silent(llm_client):
    await llm_client.call(REQ)
"""


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_key_is_in_no_traceback_junit_xml_or_json_log(
    pytester: pytest.Pytester, transport: str, closed_port: int, silent: SilentServer
) -> None:
    pytester.makepyprojecttoml(
        "[tool.pytest.ini_options]\n"
        'asyncio_mode = "auto"\nasyncio_default_fixture_loop_scope = "function"\n'
        "[tool.iterate]\n"
        f'transport = "{transport}"\nmax_attempts = 2\nbackoff_initial_s = 0.01\n'
        "request_timeout_s = 0.3\njson_logs = true\ncache_enabled = false\n"
    )
    pytester.makepyfile(test_refused=USER_TESTS, test_silent=SILENT_TESTS % silent.port)
    for i, mode in enumerate(TB_MODES):
        heads_before = len(silent.heads)
        xml = pytester.path / f"junit-{i}.xml"
        result = pytester.runpytest(
            "-p", "no:randomly", "-p", "no:cacheprovider",
            f"--iterate-endpoint=http://127.0.0.1:{closed_port}/v1",
            f"--iterate-api-key-env={KEY_ENV}",
            f"--junitxml={xml}", "-o", "junit_logging=all",
            *mode,
        )  # fmt: skip
        result.assert_outcomes(failed=4)
        shown = result.stdout.str() + result.stderr.str()
        assert "ConnectError" in shown and "RequestTimeout" in shown
        assert '"event":"stage"' in shown  # the JSON stage logs were printed with the failure
        if "--tb=auto" not in mode:  # frames with the credential were printed, masked
            assert "Secret('***')" in shown and "'Bearer ***'" in shown
        report = xml.read_text(encoding="utf-8")
        assert "ConnectError" in report and '"event":"stage"' in report
        assert SENTINEL not in shown, mode
        assert SENTINEL not in report, mode
        assert silent.wait_for(heads_before + 1) > heads_before  # this run's silent test reached it
    # the key really went out in every run: the checks above did not pass for want of one
    sent = f"authorization: bearer {SENTINEL}".lower().encode()
    assert all(sent in head.lower() for head in silent.heads)


class EchoServer:
    """An OpenAI-like endpoint that echoes the Authorization header everywhere it can."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        auth = request.headers.get("Authorization", "")
        headers = {"x-echo": auth, "x-ratelimit-remaining-requests": "9"}
        if not body.get("stream"):
            return web.json_response(
                {"choices": [{"message": {"content": f"you sent {auth}"}, "finish_reason": "stop"}]},
                headers=headers,
            )
        resp = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
        await resp.prepare(request)
        event = {"choices": [{"delta": {"content": f"you sent {auth}"}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + json.dumps(event).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", EchoServer().chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cassette_recorded_with_the_key_set_does_not_hold_it(
    echo: str, transport: str, tmp_path: Path
) -> None:
    path = tmp_path / "c.jsonl"
    inner = AiohttpTransport() if transport == "aiohttp" else HttpxTransport()
    recorder = cassette_transport("all", path, inner=inner)
    config = IterateConfig(base_url=echo, api_key_env=KEY_ENV, max_attempts=1)
    req = LLMRequest(messages=({"role": "user", "content": "hi"},), max_tokens=8)
    try:
        async with LLMClient(config, transport=recorder) as client:
            whole = await client.call(req)
            streamed = await client.call(req.replace(stream=True))
    finally:
        await inner.aclose()
    assert whole.text == streamed.text == f"you sent Bearer {SENTINEL}"  # the key went out and came back
    text = path.read_text(encoding="utf-8")
    assert recorder.recorded_count == 2 and "you sent ***" in text
    assert SENTINEL not in text
