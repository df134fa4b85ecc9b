"""Where ``iterate-bench run`` sends: the adapter between the harness and the pipeline.

:func:`open_target` yields a :class:`Target`: a ``send(item)`` coroutine that runs one
design request through the project's :class:`~pytest_iterate.pipeline.runner.Pipeline`
(or, with ``raw=True``, one bare HTTP POST), plus a description for the report.

Targets:

* ``mock`` — the project's loopback mock server (``pytest_iterate.mock``) when it is
  installed, with ``profile``; otherwise the harness's own fixed-latency
  :class:`~harness.loopback.LoopbackServer` (``mock_latency_s``).
* ``loopback`` — always the harness's own fixed-latency loopback server.
* any ``http(s)://`` base URL — a real OpenAI-compatible endpoint.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Target", "open_target"]


@dataclass(slots=True)
class Target:
    send: Callable[[Any], Awaitable[Any]]
    items: list[Any]
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def _project_mock_server(profile: str | None) -> AsyncIterator[tuple[str, str]]:
    """The project's mock server (helper B) if importable: yields (base_url, label)."""
    mod = importlib.import_module("pytest_iterate.mock")
    server_cls = mod.MockServer
    kwargs: dict[str, Any] = {}
    if profile:
        kwargs["profile"] = mod.load_profile(profile)
    server = server_cls(**kwargs)
    if hasattr(server, "__aenter__"):
        async with server as running:
            yield (
                str(getattr(running, "base_url", server.base_url)),
                "pytest_iterate.mock.MockServer",
            )
    else:  # pragma: no cover - depends on the other helper's API
        await server.start()
        try:
            yield str(server.base_url), "pytest_iterate.mock.MockServer"
        finally:
            await server.stop()


@contextlib.asynccontextmanager
async def _endpoint(
    target: str, profile: str | None, mock_latency_s: float
) -> AsyncIterator[tuple[str, str]]:
    if target.startswith(("http://", "https://")):
        yield target.rstrip("/"), "endpoint"
        return
    if target == "mock":
        try:
            async with _project_mock_server(profile) as pair:
                yield pair
                return
        except (ImportError, AttributeError):
            pass  # the project mock is not there: use our own loopback server
    from harness.loopback import LoopbackServer

    async with LoopbackServer(latency_s=mock_latency_s) as srv:
        yield srv.base_url, f"harness.loopback (fixed {mock_latency_s:g} s)"


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
    if not (target in ("mock", "loopback") or target.startswith(("http://", "https://"))):
        raise ValueError(f"unknown target {target!r}; expected mock, loopback or an http(s):// base URL")
    async with _endpoint(target, profile, mock_latency_s) as (base_url, label):
        info: dict[str, Any] = {"target": label, "base_url": base_url}
        if raw:
            async with _raw_target(base_url, info) as t:
                yield t
            return
        from pytest_iterate.pipeline.config import IterateConfig
        from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

        path = workload or str(standard_workload_path())
        items = load_workload(path)
        info["workload"] = str(path)
        overrides = {"base_url": base_url, **dict(config_overrides or {})}
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
                    from pytest_iterate.pipeline.errors import error_for_status

                    raise error_for_status(resp.status, url=url, body=data)

        info["raw"] = True
        yield Target(send=send, items=[None], info=info)
