"""The in-process front end: a respx router that answers from a :class:`MockLLM`.

Side effects are async, so latency really passes in the test's event loop and
streamed chunks arrive spaced as the client reads them. A ``reset`` raises
:class:`httpx.RemoteProtocolError` (the server dropped the connection); a ``hang``
sleeps for the request's own read timeout (httpx's timeout is enforced by its
transport, which respx replaces) and then raises :class:`httpx.ReadTimeout`, or
sleeps for the plan's ``hang_s`` when the request has no timeout.

>>> from pytest_iterate.doubles.mock.core import MockLLM
>>> router = mock_router(MockLLM("zero"))
>>> import asyncio, httpx
>>> async def models() -> int:
...     async with httpx.AsyncClient() as client:
...         return (await client.get("http://mock.iterate.invalid/v1/models")).status_code
>>> with router:
...     asyncio.run(models())
200

Only async httpx clients are served (the side effects are coroutines).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx
    import respx

    from pytest_iterate.doubles.mock.core import MockLLM

__all__ = ["MOCK_BASE_URL", "mock_router"]

# The in-process mock's own host (.invalid never resolves). Only httpx clients reach it:
# LLMClient(IterateConfig(base_url=MOCK_BASE_URL, transport="httpx")).
MOCK_BASE_URL = "http://mock.iterate.invalid/v1"


def mock_router(
    core: MockLLM, base_url: str = MOCK_BASE_URL, *, assert_all_called: bool = False
) -> respx.MockRouter:
    """A respx router for every URL on ``base_url``'s host, served by ``core``.

    Use as a context manager (``with mock_router(core): ...``) or a decorator.
    Paths under the base URL are passed to the core as ``/v1/<rest>`` whatever the
    base URL's own path; other paths on the host go as they are (``/health``,
    ``/version``: where tools probe a server before a run).
    """
    import httpx
    import respx

    url = httpx.URL(base_url.rstrip("/"))
    origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
    prefix = url.path.rstrip("/")

    async def side_effect(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not prefix or path == prefix or path.startswith(prefix + "/"):
            rest = path[len(prefix) :]
            path = "/v1" + (rest if rest.startswith("/") else "/" + rest)
        body = await request.aread()
        reply = await core.handle(request.method, path, request.headers, body)
        if reply.fault == "reset":
            raise httpx.RemoteProtocolError("mock: connection reset by peer", request=request)
        if reply.fault == "hang":
            timeout = request.extensions.get("timeout", {}) or {}
            read = timeout.get("read") if isinstance(timeout, dict) else None
            if read is None:
                await asyncio.sleep(reply.hang_s)
            else:
                await asyncio.sleep(min(float(read), reply.hang_s))
            raise httpx.ReadTimeout("mock: no answer (hang)", request=request)
        if reply.chunks is not None:
            return httpx.Response(reply.status, headers=reply.headers, content=reply.chunks, request=request)
        return httpx.Response(reply.status, headers=reply.headers, content=reply.body, request=request)

    router = respx.MockRouter(base_url=origin, assert_all_called=assert_all_called, assert_all_mocked=True)
    router.route().mock(side_effect=side_effect)
    return router
