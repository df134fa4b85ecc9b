"""Where the acceptance scenarios and fixtures send requests: the embedded mock or a real URL.

:func:`open_endpoint` is an async context manager yielding an :class:`Endpoint`:
for ``"mock"`` it starts the project's loopback :class:`~pytest_iterate.doubles.mock.MockServer`
(aiohttp.web on 127.0.0.1, port 0) over a :class:`~pytest_iterate.doubles.mock.MockLLM` core with
the given latency profile and injected faults; for an ``http(s)://`` URL it only
yields the URL (``core`` is None, faults are impossible).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Endpoint", "build_mock_core", "open_endpoint", "probe_endpoint"]


@dataclass(slots=True)
class Endpoint:
    base_url: str
    core: Any | None = None  # the MockLLM (call log, stats) when the endpoint is the mock
    profile: Any | None = None
    label: str = ""

    @property
    def context_window(self) -> int | None:
        window = getattr(self.profile, "context_window", None)
        return int(window) if window else None


def build_mock_core(
    profile: Any = "v1",
    faults: Mapping[str, float] | Sequence[str] | None = None,
    seed: int = 0,
    *,
    context_window: int | None = None,
    **kwargs: Any,
) -> Any:
    """A :class:`~pytest_iterate.doubles.mock.MockLLM`: ``profile`` (name, path or LatencyProfile), faults as
    rates (``{"429": 0.01}``) or CLI strings (``["429=0.02", "5:hang"]``: the 5th request hangs),
    ``context_window`` overriding the profile's; other ``kwargs`` go to ``MockLLM``."""
    from pytest_iterate.doubles import mock

    prof = profile if isinstance(profile, mock.LatencyProfile) else mock.load_profile(profile)
    if context_window is not None:
        prof = dataclasses.replace(prof, context_window=int(context_window))
    plan = None
    if isinstance(faults, Mapping):
        plan = mock.FaultPlan(rates=dict(faults))
    elif faults:
        plan = mock.FaultPlan.parse(list(faults))
    return mock.MockLLM(prof, seed=seed, faults=plan, **kwargs)


@contextlib.asynccontextmanager
async def open_endpoint(
    endpoint: str,
    *,
    profile: str = "v1",
    faults: Mapping[str, float] | None = None,
    seed: int = 0,
    context_window: int | None = None,
) -> AsyncIterator[Endpoint]:
    """Start the mock (``endpoint == "mock"``) or point at a real base URL."""
    if endpoint != "mock":
        if faults:
            raise ValueError("faults can only be injected into the embedded mock endpoint")
        yield Endpoint(base_url=endpoint.rstrip("/"), label=endpoint.rstrip("/"))
        return
    from pytest_iterate.doubles.mock import MockServer

    core = build_mock_core(profile, faults, seed, context_window=context_window)
    server = MockServer(core)
    await server.start()
    try:
        yield Endpoint(base_url=str(server.base_url), core=core, profile=getattr(core, "profile", None),
                       label=f"mock ({profile})")
    finally:
        await server.stop()


async def probe_endpoint(base_url: str, *, timeout_s: float = 10.0) -> str | None:
    """Why ``base_url`` cannot be reached, or None when it answers at all.

    One ``GET {base_url}/models``: any HTTP answer (even 401 or 404) means a server is
    there, and whether it speaks the API is for the real requests to tell. Only a refused
    or reset connection, a DNS failure or silence for ``timeout_s`` is "unreachable".
    """
    import aiohttp

    url = base_url.rstrip("/") + "/models"
    timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(5.0, timeout_s))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            session.get(url) as resp,
        ):
            await resp.read()
    except TimeoutError:
        return f"no answer from {url} within {timeout_s:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        reason = getattr(exc, "os_error", None) or exc
        return f"cannot connect to {url}: {type(exc).__name__}: {reason}"
    return None
