"""Which request an answer answers: :func:`request_digest` and the tag in every answer.

Every completion answer of the mock (chat and ``/v1/completions``, streamed and
whole, every choice and every item of a packed answer) carries the digest of the
request it answers as a comment line, the first line inside its python code block::

    ```python
    # answers 3f9a0c1d2b7e4a55
    def solve_412(values: list[int]) -> int:

A checker reads it back with :func:`answer_digest` and compares it with
:func:`request_digest` of the body it sent: a cache hit that returned another
request's answer shows up as a mismatch.

An answer to one item of a batch names the request that item stands for
(:func:`item_digest`): for one prompt of a list-prompt ``/v1/completions`` request,
the body with that prompt alone; for one item of a packed chat prompt (see
:mod:`pytest_iterate.batch.packing`), the body with that item as its user message and
``max_tokens`` divided by the number of items (``batch_llm_call`` asks for
``max_tokens * items``). So an item answered in a batch carries the digest of the
request it would have been sent as alone, and a batch that hands an item another
item's answer shows up as a mismatch too. The line is missing only from an answer
that ``max_tokens`` cuts before it: the title, one sentence and the fence come
first (28 tokens at most on the standard workload, whose smallest budget is 128).

The digest is the first 16 hex digits of a sha256 over the canonical JSON
(sorted keys, no spaces, integral floats written as integers so ``0.0`` and ``0``
agree) of the whole request body except :data:`DIGEST_IGNORED` (``stream`` and
``stream_options``, which change how the answer travels, not what it is): model,
messages or prompt, ``max_tokens`` and every sampling parameter count.

>>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
>>> d = request_digest(body)
>>> d == request_digest({**body, "stream": True, "temperature": 0.0}), len(d)
(True, 16)
>>> answer_digest("## x\\n\\n```python\\n# answers " + d + "\\ndef f(): ...\\n```\\n") == d
True
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ANSWER_TAG",
    "DIGEST_IGNORED",
    "answer_digest",
    "answer_digests",
    "answer_tag",
    "item_digest",
    "request_digest",
]

#: Body fields left out of the digest: they change how an answer is sent, not what it says.
DIGEST_IGNORED = frozenset({"stream", "stream_options"})
#: The comment that starts the tag line inside an answer's code block.
ANSWER_TAG = "# answers "

_DIGEST_HEX = 16
_TAG_RE = re.compile(r"^# answers ([0-9a-f]{16})$", re.MULTILINE)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_digest(body: Mapping[str, Any]) -> str:
    """16 hex digits identifying what ``body`` asks (see the module doc for what counts)."""
    if not isinstance(body, Mapping):
        raise TypeError(f"request_digest needs the request body as a mapping, got {type(body).__name__}")
    kept = {str(k): _canonical(v) for k, v in body.items() if k not in DIGEST_IGNORED}
    try:
        text = _ENCODER.encode(kept)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request_digest: the request body is not plain JSON ({exc})") from exc
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGEST_HEX]


def item_digest(body: Mapping[str, Any], item: str, *, items: int = 1, packed: bool = False) -> str:
    """The digest of the request one item of a batch stands for (see the module doc).

    ``body`` is the batch request's; ``item`` the item's prompt; ``packed`` says it is
    one of ``items`` items packed into the last user message (else one prompt of a
    list-prompt completion).

    >>> batch = {"model": "m", "prompt": ["a", "b"], "max_tokens": 8}
    >>> item_digest(batch, "b") == request_digest({"model": "m", "prompt": "b", "max_tokens": 8})
    True
    """
    out = dict(body)
    if not packed:
        out["prompt"] = item
        return request_digest(out)
    messages = out.get("messages")
    if isinstance(messages, list):
        last_user = max(
            (i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "user"),
            default=len(messages) - 1,
        )
        out["messages"] = [
            {"role": "user", "content": item} if i == last_user else m for i, m in enumerate(messages)
        ]
    else:
        out["prompt"] = item
    for key in ("max_tokens", "max_completion_tokens"):
        budget = out.get(key)
        if isinstance(budget, int) and not isinstance(budget, bool) and items > 0:
            out[key] = budget // items
    return request_digest(out)


def answer_tag(digest: str) -> str:
    """The tag line (with its newline) an answer to a request of ``digest`` carries."""
    return f"{ANSWER_TAG}{digest}\n"


def answer_digests(text: str) -> list[str]:
    """Every digest tagged in ``text``, in order (one per code block)."""
    return _TAG_RE.findall(text)


def answer_digest(text: str) -> str | None:
    """The digest of the request ``text`` answers, or None when it carries no tag."""
    m = _TAG_RE.search(text)
    return m.group(1) if m else None


def _canonical(value: Any) -> Any:
    """Integral floats as ints, tuples as lists; strings and ints as they are (the common case first)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value
