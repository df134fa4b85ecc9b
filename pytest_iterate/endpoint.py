"""One way to open the endpoint a run talks to; the fixtures, the acceptance suite and
``iterate-bench`` all use it.

An :class:`EndpointSpec` says what to open; :func:`open_endpoint` (in the running event
loop) or :func:`serve` (servers on their own thread, callable from any loop) yield an
:class:`Endpoint`: its base URL, the mock core behind it when there is one,
and how to build a client or a pipeline for it.

Targets:

``mock``        the simulated endpoint (:mod:`pytest_iterate.doubles.mock`) on 127.0.0.1, with
                a latency ``profile``, injected ``faults`` and a ``context_window``
``inprocess``   the same simulator without a socket: a respx router answers httpx clients, so
                clients for it use the httpx transport
``loopback``    a neutral server answering every request after ``loopback_latency_s``
                (for measuring the harness and the client themselves)
``http(s)://``  a real OpenAI-compatible endpoint; nothing is started

A ``cassette`` sits in front of any of them: replayed answers, or recorded ones
(``record_mode``), through a transport shared by every client built for the endpoint.

The library under it (client, pipeline) knows none of this: whoever builds a client
for an endpoint gets the transport and settings from :meth:`Endpoint.client`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pytest_iterate.client.client import LLMClient
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ConfigError
from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.secret import redact_url
from pytest_iterate.client.transport.base import Transport
from pytest_iterate.doubles.cassettes import RECORD_MODES, cassette_transport
from pytest_iterate.doubles.loopback import LoopbackServer
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.faults import FaultPlan
from pytest_iterate.doubles.mock.profiles import LatencyProfile, load_profile
from pytest_iterate.doubles.mock.respx_router import MOCK_BASE_URL, mock_router
from pytest_iterate.doubles.mock.server import MockServer
from pytest_iterate.pipeline.runner import Pipeline

__all__ = [
    "TARGETS",
    "Endpoint",
    "EndpointSpec",
    "build_mock_core",
    "open_endpoint",
    "probe_endpoint",
    "serve",
]

TARGETS = ("mock", "inprocess", "loopback")
Faults = FaultPlan | Mapping[str, float] | Sequence[str] | None


def build_mock_core(
    profile: str | LatencyProfile = "v1",
    faults: Faults = None,
    seed: int = 0,
    *,
    context_window: int | None = None,
    **kwargs: Any,
) -> MockLLM:
    """A :class:`MockLLM`: ``profile`` (name, path or LatencyProfile), faults as a plan, as rates
    (``{"429": 0.01}``) or as CLI strings (``["429=0.02", "5:hang"]``: the 5th request hangs),
    ``context_window`` overriding the profile's; other ``kwargs`` go to ``MockLLM``."""
    prof = profile if isinstance(profile, LatencyProfile) else load_profile(profile)
    if context_window is not None:
        prof = dataclasses.replace(prof, context_window=int(context_window))
    plan: FaultPlan | None
    if isinstance(faults, FaultPlan):
        plan = faults
    elif isinstance(faults, Mapping):
        plan = FaultPlan(rates=dict(faults))
    elif faults:
        plan = FaultPlan.parse(list(faults))
    else:
        plan = None
    return MockLLM(prof, seed=seed, faults=plan, **kwargs)


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """What to open. Example: ``EndpointSpec("mock", profile="fast", faults={"503": 0.1})``."""

    target: str = "mock"
    profile: str | LatencyProfile = "v1"
    faults: Faults = None
    seed: int = 0
    context_window: int | None = None
    loopback_latency_s: float = 0.05
    cassette: Path | None = None
    record_mode: str = "none"
    replay_timing: bool = False
    mock_options: Mapping[str, Any] = field(default_factory=dict)  # more MockLLM keyword arguments

    def __post_init__(self) -> None:
        if not (self.target in TARGETS or self.external):
            raise ConfigError(
                f"unknown target {self.target!r}; give {', '.join(TARGETS)} or an http(s):// base URL"
            )
        if self.faults and not self.simulated:
            raise ConfigError(
                "faults can only be injected into the simulated endpoint (mock, inprocess), "
                f"not {self.target!r}"
            )
        if self.record_mode not in RECORD_MODES:
            raise ConfigError(f"record mode {self.record_mode!r} is not one of {', '.join(RECORD_MODES)}")
        if self.record_mode != "none" and self.cassette is None:
            raise ConfigError(f"record mode {self.record_mode!r} needs a cassette file")

    @property
    def external(self) -> bool:
        return self.target.startswith(("http://", "https://"))

    @property
    def simulated(self) -> bool:
        """The mock simulator answers (fault injection and a call log are available)."""
        return self.target in ("mock", "inprocess")

    @property
    def needs_server(self) -> bool:
        """False only for a replay-only cassette: every answer comes from the file."""
        return self.cassette is None or self.record_mode != "none"

    def replace(self, **changes: Any) -> EndpointSpec:
        return dataclasses.replace(self, **changes)

    def mock_core(self) -> MockLLM:
        return build_mock_core(
            self.profile,
            self.faults,
            self.seed,
            context_window=self.context_window,
            **dict(self.mock_options),
        )


@dataclass(slots=True)
class Endpoint:
    """An opened endpoint: where it is, what answers it, how to build clients for it."""

    spec: EndpointSpec
    base_url: str
    label: str
    core: MockLLM | None = None
    transport: Transport | None = None  # shared by every client built here (a cassette)
    settings: Mapping[str, Any] = field(default_factory=dict)  # config values a client here needs
    server: MockServer | None = None  # the loopback mock, when this endpoint started one

    def server_cpu_seconds(self) -> float | None:
        """CPU time of the mock server's own thread (:func:`open_endpoint` with ``threaded=True``),
        so a measurement can leave the simulated endpoint's work out; None otherwise."""
        return self.server.cpu_seconds() if self.server is not None else None

    @property
    def context_window(self) -> int | None:
        """The simulator's context window (None for other endpoints: they say it themselves)."""
        return self.core.profile.context_window if self.core is not None else None

    def config_values(self, **overrides: Any) -> dict[str, Any]:
        """Config overrides for a client of this endpoint (``base_url``, transport), then ``overrides``."""
        return {"base_url": self.base_url, **self.settings, **overrides}

    def client(self, config: IterateConfig, *, metrics: IterateMetrics | None = None) -> LLMClient:
        return LLMClient(config, transport=self.transport, metrics=metrics)

    def pipeline(
        self, config: IterateConfig, *, metrics: IterateMetrics | None = None, **parts: Any
    ) -> Pipeline:
        """:meth:`Pipeline.from_config` with this endpoint's client (a cassette's transport, say)."""
        metrics = metrics if metrics is not None else IterateMetrics()
        if self.transport is not None and "client" not in parts:
            parts["client"] = self.client(config, metrics=metrics)
        return Pipeline.from_config(config, metrics=metrics, **parts)


@contextlib.asynccontextmanager
async def open_endpoint(spec: EndpointSpec, *, threaded: bool = False) -> AsyncIterator[Endpoint]:
    """Start (or point at) the endpoint in the running event loop; stop it on exit.

    ``threaded=True`` serves the loopback mock from its own thread and loop instead, so
    the simulated endpoint's CPU is not the measured loop's (see
    :meth:`Endpoint.server_cpu_seconds`)."""
    async with contextlib.AsyncExitStack() as stack:
        endpoint = await _start(spec, stack, threaded)
        if spec.cassette is not None:
            transport = cassette_transport(spec.record_mode, spec.cassette, replay_timing=spec.replay_timing)
            stack.push_async_callback(transport.aclose)
            endpoint.transport = transport
            endpoint.label += f", cassette {spec.cassette} ({spec.record_mode})"
        yield endpoint


async def _start(spec: EndpointSpec, stack: contextlib.AsyncExitStack, threaded: bool) -> Endpoint:
    if spec.external:
        url = spec.target.rstrip("/")
        return Endpoint(spec, url, redact_url(url))
    if spec.target == "loopback":
        loopback = await stack.enter_async_context(LoopbackServer(latency_s=spec.loopback_latency_s))
        return Endpoint(spec, loopback.base_url, f"loopback (fixed {spec.loopback_latency_s:g} s)")
    core = spec.mock_core()
    label = f"mock ({core.profile.name})"
    if spec.target == "inprocess":
        stack.enter_context(mock_router(core, MOCK_BASE_URL))
        return Endpoint(spec, MOCK_BASE_URL, f"{label}, in-process", core, settings={"transport": "httpx"})
    if threaded:
        server = MockServer(core).start_in_thread()
        stack.callback(server.stop)
    else:
        server = await stack.enter_async_context(MockServer(core))
    return Endpoint(spec, server.base_url, label, core, server=server)


@contextlib.contextmanager
def serve(spec: EndpointSpec) -> Iterator[Endpoint]:
    """The endpoint for callers in any event loop (or none: a sync client), without one of
    its own: the loopback mock runs on its own thread and loop, the in-process mock is a
    respx router, a URL is only pointed at. (A cassette or the neutral loopback server
    need the caller's loop: use :func:`open_endpoint`.)"""
    if spec.cassette is not None or spec.target == "loopback":
        raise ConfigError(f"{spec.target!r} with a cassette or the loopback server needs open_endpoint()")
    if spec.external:
        url = spec.target.rstrip("/")
        yield Endpoint(spec, url, redact_url(url))
        return
    core = spec.mock_core()
    label = f"mock ({core.profile.name})"
    if spec.target == "inprocess":
        with mock_router(core, MOCK_BASE_URL):
            yield Endpoint(spec, MOCK_BASE_URL, f"{label}, in-process", core, settings={"transport": "httpx"})
        return
    server = MockServer(core).start_in_thread()
    try:
        yield Endpoint(spec, server.base_url, label, core, server=server)
    finally:
        server.stop()


async def probe_endpoint(base_url: str, *, timeout_s: float = 10.0) -> str | None:
    """Why ``base_url`` cannot be reached, or None when it answers at all.

    One ``GET {base_url}/models``: any HTTP answer (even 401 or 404) means a server is
    there, and whether it speaks the API is for the real requests to tell. Only a refused
    or reset connection, a DNS failure or silence for ``timeout_s`` is "unreachable".
    """
    url = base_url.rstrip("/") + "/models"
    shown = redact_url(url)
    timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(5.0, timeout_s))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            session.get(url) as resp,
        ):
            await resp.read()
    except TimeoutError:
        return f"no answer from {shown} within {timeout_s:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        reason = getattr(exc, "os_error", None) or exc
        return f"cannot connect to {shown}: {type(exc).__name__}: {redact_url(str(reason))}"
    return None
