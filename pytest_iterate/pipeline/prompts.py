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
from typing import Any

from pytest_iterate.client.types import LLMRequest, Message
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.tokens.counter import TokenCounter

__all__ = ["DEFAULT_SYSTEM_TEMPLATE", "PromptBuilder"]

DEFAULT_SYSTEM_TEMPLATE = (
    "You are a senior software engineer who turns short design requests into working code.\n"
    "Answer with a brief explanation followed by the complete implementation in ONE fenced code "
    "block tagged with the language (```{language}). The code must be complete and syntactically "
    "valid {language}; do not leave placeholders or ellipses."
)
_USER_TEMPLATE = "Task: {title}\nLanguage: {language}\nRequirements:\n{requirements}{constraints}"


class PromptBuilder:
    """Builds chat requests for design requests; system parts are built and counted once.

    ``counter`` (the token guard's, so both share one memo of the system parts) is only
    used by :meth:`count_prompt`; one is made on first use when not given.
    """

    def __init__(
        self,
        *,
        default_max_tokens: int = 512,
        temperature: float = 0,
        model: str | None = None,
        system_template: str = DEFAULT_SYSTEM_TEMPLATE,
        params: Mapping[str, Any] | None = None,
        counter: TokenCounter | None = None,
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
        if self._counter is None:
            self._counter = TokenCounter()
        return self._counter.count_messages(request.messages, request.model)
