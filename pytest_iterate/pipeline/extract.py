"""Code extraction and validation for LLM answers (the ``post_process`` stage's work).

:func:`extract_code` pulls fenced blocks (```` ```lang ````) out of an answer and picks
the one for the requested language (a block tagged with it, else an untagged block,
else the largest block); with no fence at all it falls back to the code-looking tail
of the answer. :func:`validate_code` checks Python with :func:`ast.parse` and reports
the syntax error's line; other languages are not checked (``valid`` is None).
:func:`extract_artifact` does both. An answer without code is not an error: the
artifact has ``code=None`` and a ``GuardWarning(action="no_code")``.

These are plain CPU-bound functions: the pipeline runs them in its worker pool.

>>> a = extract_artifact("Here:\\n```python\\ndef f(:\\n```", "python")
>>> a.valid, a.syntax_error_line
(False, 1)
"""

from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from pytest_iterate.client.types import GuardWarning

__all__ = ["Artifact", "CodeBlock", "extract_artifact", "extract_code", "find_blocks", "validate_code"]

_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.M | re.S)
_OPEN_FENCE = re.compile(r"^[ \t]*(```|~~~)[ \t]*([\w+#.-]*)[^\n]*\n(.*)\Z", re.M | re.S)
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |async def |@\w|function |const |let |var |export |"
    r"package |func |fn |pub |use |impl |struct |#include|public |private |SELECT |CREATE )"
)
# CPython 3.11 shares the AST constructor's recursion counter between threads, so two
# ast.parse calls at once can fail with "SystemError: AST constructor recursion depth
# mismatch" (python/cpython gh-106905). ast.parse holds the GIL anyway: serialising it
# costs no parallelism. A lock, not state: nothing is kept between calls. Another
# library's ast use in another thread can still collide: that SystemError is retried once.
_AST_LOCK = threading.Lock()

_ALIASES = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "golang": "go",
    "rs": "rust",
    "c++": "cpp",
    "sh": "bash",
    "shell": "bash",
}


def _norm(language: str) -> str:
    language = language.strip().lower()
    return _ALIASES.get(language, language)


@dataclass(frozen=True, slots=True)
class CodeBlock:
    language: str | None  # the fence's tag (normalised), None when untagged or unfenced
    code: str
    fenced: bool = True


@dataclass(frozen=True, slots=True)
class Artifact:
    """The extracted code of one answer and what validation found.

    ``valid`` is True/False for Python, None when the language is not checked or
    there is no code. ``syntax_error_line`` is 1-based within ``code``.
    """

    code: str | None
    language: str | None
    valid: bool | None
    syntax_error_line: int | None = None
    syntax_error: str | None = None
    fenced: bool = False
    blocks: int = 0
    warnings: tuple[GuardWarning, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "language": self.language,
            "valid": self.valid,
            "syntax_error_line": self.syntax_error_line,
            "syntax_error": self.syntax_error,
            "fenced": self.fenced,
            "blocks": self.blocks,
        }


def find_blocks(text: str) -> list[CodeBlock]:
    """All fenced blocks in order; an unclosed last fence counts (answers cut at max_tokens)."""
    blocks: list[CodeBlock] = []
    end = 0
    for match in _FENCE.finditer(text):
        blocks.append(CodeBlock(_norm(match.group(2)) or None, match.group(3).rstrip("\n")))
        end = match.end()
    tail = _OPEN_FENCE.search(text, end)
    if tail is not None:
        blocks.append(CodeBlock(_norm(tail.group(2)) or None, tail.group(3).rstrip("\n")))
    return blocks


def extract_code(text: str, language: str) -> CodeBlock | None:
    """The block for ``language`` (see module doc), or None when the answer holds no code."""
    return _choose(find_blocks(text), text, language)


def _choose(found: list[CodeBlock], text: str, language: str) -> CodeBlock | None:
    wanted = _norm(language)
    blocks = [b for b in found if b.code.strip()]
    if blocks:
        for pick in (
            [b for b in blocks if b.language == wanted],
            [b for b in blocks if b.language is None],
            blocks,
        ):
            if pick:
                return max(pick, key=lambda b: len(b.code))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _CODE_LINE.match(line):
            return CodeBlock(None, "\n".join(lines[i:]).strip("\n"), fenced=False)
    return None


def validate_code(code: str, language: str | None) -> tuple[bool | None, int | None, str | None]:
    """``(valid, syntax_error_line, message)``; Python only, other languages give ``(None, None, None)``."""
    if language is None or _norm(language) != "python":
        return None, None, None
    try:
        _parse(code)
    except SyntaxError as exc:
        return False, exc.lineno, exc.msg
    except ValueError as exc:  # e.g. null bytes
        return False, None, str(exc)
    return True, None, None


def _parse(code: str) -> None:
    with _AST_LOCK:
        try:
            ast.parse(code)
        except SystemError:  # gh-106905 through another thread's AST use: once more
            ast.parse(code)


def extract_artifact(text: str, language: str) -> Artifact:
    """Extract and validate; an answer without code gives a ``no_code`` warning, not an error."""
    blocks = find_blocks(text)
    block = _choose(blocks, text, language)
    if block is None:
        warning = GuardWarning("no_code", f"the answer holds no {language} code ({len(text)} characters)")
        return Artifact(None, None, None, warnings=(warning,))
    detected = block.language or _norm(language)
    valid, line, message = validate_code(block.code, detected)
    return Artifact(
        code=block.code,
        language=detected,
        valid=valid,
        syntax_error_line=line,
        syntax_error=message,
        fenced=block.fenced,
        blocks=len(blocks) if block.fenced else 0,
    )
