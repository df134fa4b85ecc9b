"""A simulated OpenAI-compatible LLM endpoint: one core, two front ends.

    MockLLM          the simulation core (latency profile, capacity, faults, rate limits, answers)
    LatencyProfile   load_profile("v1" | "fast" | "degraded" | "zero" | path.json)
    FaultPlan        faults by rate, by script and by first attempts ("429=0.02", "5:hang",
                     "503x3=0.02": a seeded share of logical requests fail 3 attempts)
    RateLimiter      requests/min and tokens/min buckets with x-ratelimit-* headers
    request_digest   what a request asks, in 16 hex digits; answer_digest(text) reads it back
                     from the ``# answers <digest>`` line every answer carries
    mock_router      a respx router over a core (in-process, for httpx clients)
    MockServer       an aiohttp.web server over a core on 127.0.0.1 (any client)

Modules: ``core`` (MockLLM: routes, and a completion's three steps ``request``
(validate), ``plan`` and ``render``), ``calls`` (stats, attempts per logical request,
the bounded call log), ``answers``, ``digest``, ``faults``, ``profiles``,
``ratelimit``, the front ends ``respx_router`` and ``server``, ``cli`` (serve-mock),
and ``calibration`` (how long a call takes on a profile over the standard workload).

Names are imported lazily: ``import pytest_iterate.doubles.mock`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_iterate.doubles.mock.core import CallRecord, MockLLM, MockReply, MockStats
    from pytest_iterate.doubles.mock.digest import answer_digest, request_digest
    from pytest_iterate.doubles.mock.faults import FAULT_KINDS, FaultPlan, FirstAttempts, parse_fault
    from pytest_iterate.doubles.mock.profiles import (
        Distribution,
        LatencyProfile,
        load_profile,
        shipped_profiles,
    )
    from pytest_iterate.doubles.mock.ratelimit import RateLimiter
    from pytest_iterate.doubles.mock.respx_router import mock_router
    from pytest_iterate.doubles.mock.server import MockServer

__all__ = [
    "FAULT_KINDS",
    "CallRecord",
    "Distribution",
    "FaultPlan",
    "FirstAttempts",
    "LatencyProfile",
    "MockLLM",
    "MockReply",
    "MockServer",
    "MockStats",
    "RateLimiter",
    "answer_digest",
    "load_profile",
    "mock_router",
    "parse_fault",
    "request_digest",
    "shipped_profiles",
]

_WHERE = {
    "CallRecord": "core",
    "MockLLM": "core",
    "MockReply": "core",
    "MockStats": "core",
    "answer_digest": "digest",
    "request_digest": "digest",
    "FAULT_KINDS": "faults",
    "FaultPlan": "faults",
    "FirstAttempts": "faults",
    "parse_fault": "faults",
    "Distribution": "profiles",
    "LatencyProfile": "profiles",
    "load_profile": "profiles",
    "shipped_profiles": "profiles",
    "RateLimiter": "ratelimit",
    "mock_router": "respx_router",
    "MockServer": "server",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_iterate.doubles.mock' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pytest_iterate.doubles.mock.{module}"), name)
