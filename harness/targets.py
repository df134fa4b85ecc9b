"""Where ``iterate-bench run`` sends: the adapter between the harness and the pipeline.

:func:`open_target` yields a :class:`Target`: a ``send(item)`` coroutine that runs one
design request through the project's :class:`~pytest_iterate.pipeline.runner.Pipeline`
(or, with ``raw=True``, one bare HTTP POST), plus a description for the report.

Targets:

* ``mock`` — the project's loopback mock server (``pytest_iterate.doubles.mock.server``) with
  latency ``profile`` (default ``v1``); the harness's own fixed-latency
  :class:`~pytest_iterate.doubles.loopback.LoopbackServer` if the project mock is not installed.
* ``inprocess`` — the project's mock core behind a respx router (no socket).
* ``loopback`` — always the harness's own fixed-latency loopback server.
* any ``http(s)://`` base URL — a real OpenAI-compatible endpoint.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TARGETS", "Target", "open_target"]

TARGETS = ("mock", "inprocess", "loopback")


@dataclass(slots=True)
class Target:
    send: Callable[[Any], Awaitable[Any]]
    items: list[Any]
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def _project_mock_server(profile: str | None) -> AsyncIterator[tuple[str, str]]:
    """The project's loopback mock server: yields (base_url, label)."""
    server_mod = importlib.import_module("pytest_iterate.doubles.mock.server")
    name = profile or "v1"
    async with server_mod.MockServer(profile=name) as server:
        yield str(server.base_url), f"pytest_iterate.doubles.mock.MockServer (profile {name})"


@contextlib.asynccontextmanager
async def _project_mock_inprocess(profile: str | None) -> AsyncIterator[tuple[str, str]]:
    """The project's in-process mock (a respx router over the mock core)."""
    core_mod = importlib.import_module("pytest_iterate.doubles.mock.core")
    router_mod = importlib.import_module("pytest_iterate.doubles.mock.respx_router")
    base_url = router_mod.MOCK_BASE_URL

    name = profile or "v1"
    with router_mod.mock_router(core_mod.MockLLM(name), base_url):
        yield base_url, f"pytest_iterate.doubles.mock in-process (profile {name})"


@contextlib.asynccontextmanager
async def _endpoint(
    target: str, profile: str | None, mock_latency_s: float
) -> AsyncIterator[tuple[str, str]]:
    if target.startswith(("http://", "https://")):
        yield target.rstrip("/"), "endpoint"
        return
    if target == "inprocess":
        async with _project_mock_inprocess(profile) as pair:
            yield pair
        return
    if target == "mock":
        try:
            importlib.import_module("pytest_iterate.doubles.mock.server")
        except ImportError:
            pass  # the project mock is not installed: fall back to our own loopback server
        else:
            async with _project_mock_server(profile) as pair:
                yield pair
            return
    from pytest_iterate.doubles.loopback import LoopbackServer

    async with LoopbackServer(latency_s=mock_latency_s) as srv:
        yield srv.base_url, f"pytest_iterate.doubles.loopback (fixed {mock_latency_s:g} s)"


@contextlib.asynccontextmanager
async def open_target(
    target: str = "mock",
    *,
    workload: str | None = None,
    profile: str | None = None,
    mock_latency_s: float = 0.05,
    config_overrides: Mapping[str, Any] | None = None,
    raw: bool = False,
) -> AsyncIterator[Target]:
    """Start (or point at) the endpoint and yield a :class:`Target` for it."""
    if not (target in TARGETS or target.startswith(("http://", "https://"))):
        raise ValueError(
            f"unknown target {target!r}; expected {', '.join(TARGETS)} or an http(s):// base URL"
        )
    if raw and target == "inprocess":
        raise ValueError("--raw needs a real socket; the in-process mock only serves the pipeline's client")
    async with _endpoint(target, profile, mock_latency_s) as (base_url, label):
        info: dict[str, Any] = {"target": label, "base_url": base_url}
        if raw:
            async with _raw_target(base_url, info) as t:
                yield t
            return
        from pytest_iterate.client.config import IterateConfig
        from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

        path = workload or str(standard_workload_path())
        items = load_workload(path)
        info["workload"] = str(path)
        overrides = {"base_url": base_url, **dict(config_overrides or {})}
        if target == "inprocess":  # respx intercepts httpx only
            overrides["transport"] = "httpx"
        config = IterateConfig.load(overrides)
        info["model"] = config.model
        info["cache_enabled"] = config.cache_enabled
        pipeline_mod = importlib.import_module("pytest_iterate.pipeline.runner")
        pipeline = pipeline_mod.Pipeline.from_config(config)
        try:

            async def send(item: Any) -> Any:
                return await pipeline.run(item)

            yield Target(send=send, items=list(items), info=info)
        finally:
            await pipeline.aclose()


@contextlib.asynccontextmanager
async def _raw_target(base_url: str, info: dict[str, Any]) -> AsyncIterator[Target]:
    """One POST per item over a shared aiohttp session: measures the harness and the wire."""
    import aiohttp

    url = base_url + "/chat/completions"
    body = {"model": "loopback", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(item: Any) -> None:
            async with session.post(url, json=body) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    from pytest_iterate.client.errors import error_for_status

                    raise error_for_status(resp.status, url=url, body=data)

        info["raw"] = True
        yield Target(send=send, items=[None], info=info)
