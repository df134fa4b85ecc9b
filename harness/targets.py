"""What ``iterate-bench run`` sends to: the pipeline, or bare HTTP, on an opened endpoint.

:func:`open_target` opens the endpoint (:mod:`pytest_iterate.endpoint`: the loopback
mock, the in-process mock, a neutral loopback server or a real URL) and yields a
:class:`Target`: a ``send(item)`` coroutine that runs one design request through the
project's :class:`~pytest_iterate.pipeline.runner.Pipeline` (or, with ``raw=True``,
one bare HTTP POST), the items to send, and a description for the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ConfigError, error_for_status
from pytest_iterate.client.secret import redact_url
from pytest_iterate.endpoint import Endpoint, EndpointSpec, open_endpoint
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path

__all__ = ["Target", "open_target"]


@dataclass(slots=True)
class Target:
    send: Callable[[Any], Awaitable[Any]]
    items: list[Any]
    info: dict[str, str | int | float | bool | None] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def open_target(
    spec: EndpointSpec,
    *,
    workload: str | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    raw: bool = False,
) -> AsyncIterator[Target]:
    """Open the endpoint of ``spec`` and yield a :class:`Target` for it."""
    if raw and spec.target == "inprocess":
        raise ConfigError("--raw needs a real socket; the in-process mock only serves the pipeline's client")
    async with open_endpoint(spec) as endpoint:
        info: dict[str, str | int | float | bool | None] = {
            "target": endpoint.label,
            "base_url": redact_url(endpoint.base_url),
        }
        if raw:
            async with _raw_target(endpoint, info) as target:
                yield target
            return
        path = workload or str(standard_workload_path())
        items = load_workload(path)
        config = IterateConfig.load(endpoint.config_values(**dict(config_overrides or {})))
        info.update(workload=str(path), model=config.model, cache_enabled=config.cache_enabled)
        async with endpoint.pipeline(config) as pipeline:
            yield Target(send=pipeline.run, items=list(items), info=info)


@contextlib.asynccontextmanager
async def _raw_target(endpoint: Endpoint, info: dict[str, Any]) -> AsyncIterator[Target]:
    """One POST per item over a shared aiohttp session: measures the harness and the wire."""
    url = endpoint.base_url + "/chat/completions"
    body = {"model": "loopback", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(item: Any) -> None:
            async with session.post(url, json=body) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise error_for_status(resp.status, url=url, body=data)

        info["raw"] = True
        yield Target(send=send, items=[None], info=info)
