"""Script classes of text, measured in cl100k tokens: what the per-script estimate learns over.

A server with another tokenizer counts differently per script: SmolLM2 counts about
1.05x what cl100k counts for English and 1.68x for Chinese, a tokenizer that splits
digits one by one counts up to 3x for numbers, and code indentation or emoji can
cost several times more. So a prompt is measured as a :class:`ScriptProfile`: its
cl100k tokens split by the class of what each token spells.

Classes (:data:`SCRIPTS`, in this order):

``latin``     letters of the Latin script (English, French, identifiers)
``digits``    digits
``punct``     punctuation and ASCII symbols (code operators, brackets, quotes, dashes)
``space``     whitespace (indentation, line breaks)
``cjk``       Chinese, Japanese and Korean characters, CJK punctuation, full-width forms
``symbols``   emoji and other symbols (arrows, dingbats, pictographs, joiners, selectors)
``other``     letters of every other script (Cyrillic, Greek, Arabic, Devanagari, Thai, ...)
``template``  not text: the chat format's tokens (per message, per name, reply priming)

A token spelling several classes (``" 12"``, ``"(x"``) counts for the one a foreign
tokenizer is likely to find most expensive (the first of ``symbols, other, cjk,
digits, punct, latin, space`` it holds). A token holding only part of a character
(cl100k splits many emoji and rare CJK characters into byte pieces) counts for the
class of the character it starts, and a token of continuation bytes only counts for
the class of the token before it.

>>> from pytest_iterate.tokens.counter import TokenCounter
>>> p = TokenCounter().profile("Total: 42 items, 中文 😀")
>>> {k: v for k, v in p.as_dict().items() if v}
{'latin': 2, 'digits': 1, 'punct': 2, 'space': 1, 'cjk': 2, 'symbols': 1}
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CONTENT_SCRIPTS",
    "SCRIPTS",
    "ScriptProfile",
    "TokenClassTable",
    "char_class",
]

SCRIPTS: tuple[str, ...] = ("latin", "digits", "punct", "space", "cjk", "symbols", "other", "template")
CONTENT_SCRIPTS = SCRIPTS[:-1]
LATIN, DIGITS, PUNCT, SPACE, CJK, SYMBOLS, OTHER, TEMPLATE = range(len(SCRIPTS))
_CONT = -1  # a token of UTF-8 continuation bytes only: the class of the token before it
# the class a token spelling several classes counts for, most expensive first
_PRIORITY = {c: rank for rank, c in enumerate((SYMBOLS, OTHER, CJK, DIGITS, PUNCT, LATIN, SPACE))}

_CJK_RANGES = (
    (0x2E80, 0x2FDF),  # CJK and Kangxi radicals
    (0x2FF0, 0x9FFF),  # CJK symbols and punctuation, kana, bopomofo, Hangul jamo, Ext A, unified
    (0xA960, 0xA97F),  # Hangul jamo extended A
    (0xAC00, 0xD7FF),  # Hangul syllables and jamo extended B
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0xFE30, 0xFE4F),  # compatibility forms
    (0xFF00, 0xFFEF),  # half-width and full-width forms
    (0x20000, 0x3FFFF),  # extensions B and later
)


def _in(ranges: tuple[tuple[int, int], ...], code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in ranges)


def char_class(ch: str) -> int:
    """The class index (into :data:`SCRIPTS`) of one character."""
    code = ord(ch)
    if code < 0x80:
        if ch.isspace():
            return SPACE
        if ch.isalpha():
            return LATIN
        return DIGITS if ch.isdigit() else PUNCT
    if ch.isspace():
        return SPACE
    if _in(_CJK_RANGES, code):
        return CJK
    if 0x2000 <= code <= 0x206F:  # general punctuation: dashes, smart quotes, ellipsis; ZWJ joins emoji
        return SYMBOLS if code in (0x200C, 0x200D) else PUNCT
    if 0x2070 <= code <= 0x2BFF or 0xFE00 <= code <= 0xFE0F or code >= 0x1F000:
        return SYMBOLS  # arrows, math, dingbats, shapes, selectors, emoji, tags
    category = unicodedata.category(ch)
    if category[0] == "L" or category[0] == "M":
        if code < 0x250 or 0x1E00 <= code <= 0x1EFF:
            return LATIN
        return OTHER
    if category == "Nd":
        return DIGITS
    if category[0] == "P":
        return PUNCT
    if category[0] == "S" or category[0] == "C":
        return SYMBOLS if code >= 0x250 else PUNCT
    return OTHER


def _lead_class(raw: bytes) -> int:
    """The class of the character whose UTF-8 encoding starts ``raw`` (cut after 1-3 bytes)."""
    lead = raw[0]
    second = raw[1] if len(raw) > 1 else None
    if lead < 0xE0:  # 2 bytes: U+0080..U+07FF
        return LATIN if lead <= 0xC9 else OTHER
    if lead < 0xF0:  # 3 bytes: U+0800..U+FFFF
        code = (lead & 0x0F) << 12 | ((second & 0x3F) << 6 if second is not None else 0)
        if second is None:
            if lead == 0xE2:
                return SYMBOLS
            if 0xE3 <= lead <= 0xED:
                return CJK
            return SYMBOLS if lead >= 0xEE else OTHER
        if _in(_CJK_RANGES, code) or _in(_CJK_RANGES, code | 0x3F):
            return CJK
        if 0x2000 <= code <= 0x2BFF or code >= 0xE000:
            return SYMBOLS
        return OTHER
    # 4 bytes: U+10000.. (emoji, symbols; CJK extensions from U+20000)
    if second is not None and 0xA0 <= second <= 0xB1 and lead == 0xF0:
        return CJK
    return SYMBOLS


def classify_token_bytes(raw: bytes) -> int:
    """The class of one token given its bytes (``_CONT`` for continuation bytes only)."""
    if not raw:
        return SPACE
    classes = {char_class(ch) for ch in raw.decode("utf-8", errors="ignore")}
    leads = [i for i, b in enumerate(raw) if b >= 0xC0]
    if leads:  # a character cut at the end of the token counts for the token
        j = leads[-1]
        need = 2 if raw[j] < 0xE0 else 3 if raw[j] < 0xF0 else 4
        if len(raw) - j < need:
            classes.add(_lead_class(raw[j:]))
    if not classes:
        return _CONT
    if classes == {SPACE}:
        return SPACE
    classes.discard(SPACE)
    return min(classes, key=_PRIORITY.__getitem__)


class TokenClassTable(dict[int, int]):
    """token id -> class index, filled on first sight of each id from the encoding's bytes."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        super().__init__()
        self._token_bytes = token_bytes

    def __missing__(self, token: int) -> int:
        cls = self[token] = classify_token_bytes(self._token_bytes(token))
        return cls

    def counts(self, tokens: Iterable[int]) -> list[int]:
        """Tokens per class (a list indexed like :data:`SCRIPTS`) of a token sequence."""
        ids = tokens if isinstance(tokens, list) else list(tokens)
        tally = Counter(map(self.__getitem__, ids))
        counts = [0] * len(SCRIPTS)
        if tally.get(_CONT):  # rare: only texts with characters cl100k cuts into bytes
            prev = LATIN
            for token in ids:
                cls = self[token]
                if cls == _CONT:
                    cls = prev
                counts[cls] += 1
                prev = cls
            return counts
        for cls, n in tally.items():
            counts[cls] = n
        return counts


@dataclass(frozen=True, slots=True)
class ScriptProfile:
    """cl100k tokens of a prompt (or a text) per class of :data:`SCRIPTS`.

    >>> p = ScriptProfile.of(latin=100, cjk=50) + ScriptProfile.of(template=9)
    >>> p.total, p["cjk"], p.nonzero()
    (159, 50, {'latin': 100, 'cjk': 50, 'template': 9})
    """

    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(SCRIPTS):
            raise ValueError(f"a ScriptProfile has {len(SCRIPTS)} counts ({', '.join(SCRIPTS)})")

    @classmethod
    def of(cls, **counts: int) -> ScriptProfile:
        unknown = sorted(set(counts) - set(SCRIPTS))
        if unknown:
            raise ValueError(f"unknown script class(es) {', '.join(unknown)}; classes: {', '.join(SCRIPTS)}")
        return cls(tuple(int(counts.get(name, 0)) for name in SCRIPTS))

    @classmethod
    def empty(cls) -> ScriptProfile:
        return _EMPTY

    @classmethod
    def from_mapping(cls, counts: Mapping[str, int]) -> ScriptProfile:
        return cls.of(**dict(counts))

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def content_total(self) -> int:
        """Tokens of text (every class but ``template``)."""
        return self.total - self.counts[TEMPLATE]

    def __getitem__(self, name: str) -> int:
        return self.counts[SCRIPTS.index(name)]

    def __add__(self, other: ScriptProfile) -> ScriptProfile:
        return ScriptProfile(tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)))

    def with_template(self, tokens: int) -> ScriptProfile:
        counts = list(self.counts)
        counts[TEMPLATE] += tokens
        return ScriptProfile(tuple(counts))

    def as_dict(self) -> dict[str, int]:
        return dict(zip(SCRIPTS, self.counts, strict=True))

    def nonzero(self) -> dict[str, int]:
        return {k: v for k, v in self.as_dict().items() if v}


_EMPTY = ScriptProfile((0,) * len(SCRIPTS))
