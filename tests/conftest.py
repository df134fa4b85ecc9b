"""Shared test fixtures: a clean environment, pytester, one loopback-server fixture.

``loopback`` starts aiohttp.web applications on 127.0.0.1 (port 0, the OS picks) in the
test's event loop and stops them after the test: the one way the project's tests stand up
a real HTTP server of their own (``MockServer`` is the way to stand up the mock).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiohttp import web

pytest_plugins = ["pytester"]

Loopback = Callable[[web.Application], Awaitable[str]]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ITERATE_* setting or API key of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("ITERATE") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name)


@pytest_asyncio.fixture(loop_scope="function")
async def loopback() -> AsyncIterator[Loopback]:
    """``base = await loopback(app)``: serve ``app`` on 127.0.0.1; ``base`` is ``http://127.0.0.1:PORT``."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
