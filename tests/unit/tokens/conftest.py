"""Loopback servers with another tokenizer (:class:`ForeignServer`), one per kind of endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pytest_iterate.doubles.foreign import ForeignServer

StartForeign = Callable[..., Awaitable[ForeignServer]]


@pytest.fixture
async def foreign() -> AsyncIterator[StartForeign]:
    """``await foreign(kind="vllm", window=2048, ...)``: a started server, stopped after the test."""
    started: list[ForeignServer] = []

    async def start(**kwargs: Any) -> ForeignServer:
        server = await ForeignServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()
