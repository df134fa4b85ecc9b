"""The composite ("packed") prompt format: several short prompts in one chat request.

:func:`pack_prompts` builds one prompt that asks the model to answer every item under
a header line ``### ITEM <i>`` (1-based). :func:`split_packed_answer` cuts the reply
back into one answer per item, tolerating what models actually write: a preamble or a
closing remark, markdown bold or a colon around the header, ``---`` separators, items
missing (``None`` in their place), duplicated headers (the first non-empty one wins).
:func:`parse_packed_prompt` is the inverse of :func:`pack_prompts`; the mock endpoint
uses it to find the sub-prompts and :func:`format_packed_answer` to reply.

Each item in the prompt carries its length, so the round trip is exact whatever the
prompt text holds (even a delimiter line):

>>> parse_packed_prompt(pack_prompts(["2+2?", "capital of France?"]))
['2+2?', 'capital of France?']
>>> split_packed_answer("Sure!\\n**ITEM 1:** 4\\n### ITEM 2\\nParis\\nHope this helps.", 2)
['4', 'Paris\\nHope this helps.']
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "PACKED_MARKER",
    "format_packed_answer",
    "item_header",
    "pack_prompts",
    "parse_packed_prompt",
    "split_packed_answer",
]

PACKED_MARKER = "[packed-prompt v1: {n} items]"

_INSTRUCTIONS = (
    "You will answer {n} separate requests in one reply. Each request is between a line "
    "<<<ITEM i ...>>> and a line <<<END ITEM i>>>; answer each one independently.\n"
    "Reply with exactly {n} sections, in order from 1 to {n}. Start section i with a line "
    "that contains only `### ITEM i` and write the answer to request i under it. Write "
    "nothing before the first section and nothing between sections except the answers."
)
_MARKER_RE = re.compile(r"^\[packed-prompt v1: (\d+) items\]$", re.MULTILINE)
_OPEN_RE = re.compile(r"<<<ITEM (\d+) \(len=(\d+)\)>>>\n")

# A header line: "### ITEM 3", "**ITEM 3:**", "Item 3:", "ITEM 3" alone, "<<<ITEM 3>>>".
# Text after the header on the same line counts as the start of the answer only when the
# header is clearly marked (#, bold, or a colon), so "Item 3 of the list is..." in an
# answer's body is not mistaken for a header.
_HEADER_RE = re.compile(
    r"""^[ \t>]*
    (?P<hash>\#{1,6}[ \t]*)?
    (?P<open>\*\*|__|\*|_)?[ \t]*
    (?P<angle><<<[ \t]*)?
    ITEM[ \t]*\#?[ \t]*(?P<num>\d+)
    (?:[ \t]*\(len=\d+\))?
    [ \t]*(?P<close1>\*\*|__|\*|_)?
    [ \t]*(?P<punct>[:.)\-\u2013\u2014]|>>>)?
    [ \t]*(?P<close2>\*\*|__|\*|_)?
    [ \t]*(?P<rest>.*?)[ \t]*$""",
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
_END_LINE_RE = re.compile(r"^[ \t]*<<<[ \t]*END ITEM[ \t]*\d+[ \t]*>>>[ \t]*$", re.IGNORECASE)
_NOISE_LINE_RE = re.compile(
    r"^[ \t]*(?:-{3,}|\*{3,}|_{3,}|<<<[ \t]*END ITEM[ \t]*\d+[ \t]*>>>)[ \t]*$", re.IGNORECASE
)


def item_header(i: int) -> str:
    """The header line the model is asked to write before answer ``i`` (1-based)."""
    return f"### ITEM {i}"


def pack_prompts(prompts: Sequence[str]) -> str:
    """One prompt asking for an answer to each of ``prompts`` under ``### ITEM <i>``."""
    n = len(prompts)
    if n == 0:
        raise ValueError("pack_prompts needs at least one prompt")
    parts = [_INSTRUCTIONS.format(n=n), PACKED_MARKER.format(n=n), ""]
    for i, prompt in enumerate(prompts, start=1):
        parts.append(f"<<<ITEM {i} (len={len(prompt)})>>>\n{prompt}\n<<<END ITEM {i}>>>")
    return "\n".join(parts)


def parse_packed_prompt(text: str) -> list[str] | None:
    """The sub-prompts of a prompt built by :func:`pack_prompts`, or None if it is not one."""
    marker = _MARKER_RE.search(text)
    if marker is None:
        return None
    n = int(marker.group(1))
    pos = marker.end()
    prompts: list[str] = []
    for i in range(1, n + 1):
        opened = _OPEN_RE.search(text, pos)
        if opened is None or int(opened.group(1)) != i:
            return None
        start = opened.end()
        end = start + int(opened.group(2))
        closing = f"\n<<<END ITEM {i}>>>"
        if text[end : end + len(closing)] != closing:
            return None
        prompts.append(text[start:end])
        pos = end + len(closing)
    return prompts if n > 0 else None


def format_packed_answer(answers: Sequence[str]) -> str:
    """A well-formed reply to a packed prompt (what the mock endpoint answers)."""
    return "\n\n".join(f"{item_header(i)}\n{a}" for i, a in enumerate(answers, start=1))


def split_packed_answer(answer: str, n: int) -> list[str | None]:
    """Cut a reply to a packed prompt of ``n`` items into ``n`` answers (None: missing)."""
    headers: list[tuple[int, int, int, str]] = []  # (num, line start, line end, rest of line)
    for m in _HEADER_RE.finditer(answer):
        marked = bool(m.group("hash") or m.group("open") or m.group("angle") or m.group("punct"))
        rest = m.group("rest")
        if rest and not marked:
            continue  # "Item 3 of the list..." inside an answer
        stray = m.group("open") and not (m.group("close1") or m.group("close2"))
        if stray and not m.group("hash"):
            continue  # "*item 3 ..." a stray emphasis, not a header
        headers.append((int(m.group("num")), m.start(), m.end(), rest))
    results: list[str | None] = [None] * n
    for k, (num, _start, end, rest) in enumerate(headers):
        if not 1 <= num <= n or results[num - 1] is not None:
            continue
        last = k + 1 == len(headers)
        stop = len(answer) if last else headers[k + 1][1]
        body = _cut_at_end_marker(answer[end:stop], last=last)
        text = _clean((rest + "\n" + body) if rest else body)
        if text:
            results[num - 1] = text
    return results


def _cut_at_end_marker(body: str, *, last: bool) -> str:
    """Drop what follows an ``<<<END ITEM>>>`` line, or in the last section a ``---`` rule.

    Text after the final item and a separator is a closing remark, not the answer.
    """
    lines = body.split("\n")
    for i, line in enumerate(lines):
        if i == 0:
            continue  # the header line's own remainder
        if _END_LINE_RE.match(line):
            return "\n".join(lines[:i])
        if last and _NOISE_LINE_RE.match(line) and any(x.strip() for x in lines[i + 1 :]):
            return "\n".join(lines[:i])
    return body


def _clean(text: str) -> str:
    lines = [line for line in text.split("\n") if not _NOISE_LINE_RE.match(line)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
