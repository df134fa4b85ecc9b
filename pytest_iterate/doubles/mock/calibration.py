"""How long an uncached LLM call takes on a profile, over the standard workload.

The ``v1`` profile is calibrated so that the mean uncached call over the standard
workload (``fixtures/workloads/designs.jsonl``: each of its 70 distinct designs
once, built by the pipeline's :class:`~pytest_iterate.pipeline.prompts.PromptBuilder`,
non-streamed, alone) is the seeds' 2.3 s. Three ways to get that mean, from the
most abstract to the most real:

    expected_mean_call_s(profile, bodies)      analytic: the profile's means, no RNG
    await virtual_mean_call_s(profile, bodies) the core on virtual time, one seed
    scripts/measure_mock_llm_call.py           our LLMClient against the loopback server

The analytic value is the mean over the designs of
``E[ttft_base] + prefill_per_token_s * prompt_tokens + (E[min(length, max_tokens)] - 1) * E[itl]``
(:meth:`~.profiles.LatencyProfile.expected_total_s`); the other two add the seed's
draws (answer lengths vary with the seed: about 2 % between seeds) and, for the
last, the client's and the server's own time.

>>> bodies = standard_bodies()
>>> len(bodies), sorted({b["max_tokens"] for b in bodies})
(70, [128, 256, 384, 512])
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_iterate.client.types import LLMRequest
from pytest_iterate.doubles.mock.core import MockLLM
from pytest_iterate.doubles.mock.profiles import LatencyProfile
from pytest_iterate.pipeline.prompts import PromptBuilder
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path
from pytest_iterate.tokens.counter import TokenCounter

__all__ = [
    "CALIBRATION_MODEL",
    "expected_mean_call_s",
    "standard_bodies",
    "standard_requests",
    "virtual_mean_call_s",
]

CALIBRATION_MODEL = "gpt-4o-mini"  # the pipeline's default model
_CHAT = "/v1/chat/completions"


def standard_requests() -> list[LLMRequest]:
    """The request of each distinct design of the standard workload, in file order."""
    builder = PromptBuilder()
    seen: dict[str, LLMRequest] = {}
    for design in load_workload(standard_workload_path()):
        if design.id not in seen:
            seen[design.id] = builder.build(design)
    return list(seen.values())


def standard_bodies(model: str = CALIBRATION_MODEL) -> list[dict[str, Any]]:
    """The JSON bodies of :func:`standard_requests` as the client sends them."""
    return [request.body(model) for request in standard_requests()]


def expected_mean_call_s(
    profile: LatencyProfile, bodies: Sequence[Mapping[str, Any]], counter: TokenCounter | None = None
) -> float:
    """The analytic mean of a lone call over ``bodies`` (chat bodies with ``max_tokens``)."""
    counter = counter or TokenCounter()
    return statistics.fmean(
        profile.expected_total_s(
            counter.count_messages(body["messages"], str(body.get("model"))), body.get("max_tokens")
        )
        for body in bodies
    )


class _VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


async def virtual_mean_call_s(
    profile: LatencyProfile, bodies: Sequence[Mapping[str, Any]], seed: int = 0
) -> float:
    """The mean time of the core's answers to ``bodies``, sent one by one, on virtual time."""
    vt = _VirtualTime()
    core = MockLLM(profile, seed=seed, clock=vt.clock, sleep=vt.sleep)
    times = []
    for body in bodies:
        start = vt.now
        reply = await core.handle("POST", _CHAT, {}, json.dumps(body).encode())
        if reply.status != 200:
            detail = reply.body[:200].decode(errors="replace")
            raise RuntimeError(f"the mock answered {reply.status} to a calibration request: {detail}")
        times.append(vt.now - start)
    return statistics.fmean(times)
