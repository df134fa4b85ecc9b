"""Cache keys: a versioned sha256 over the canonical JSON of what changes the output.

The key covers the normalized endpoint base URL and the whole request body except a
deny-list of fields known not to change the answer (``stream``, ``user``, ...). A new
parameter nobody has heard of yet is therefore part of the key: the safe default.
The API key is never in the body, and credentials in the base URL (``user:pass@`` or a
``?api-key=`` query) are dropped before hashing.

>>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
>>> k = cache_key_from_body("http://127.0.0.1:8000/v1/", body)
>>> k.startswith("v1:") and k == cache_key_from_body("http://127.0.0.1:8000/v1", dict(reversed(body.items())))
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pytest_iterate.client.errors import CacheError
from pytest_iterate.client.types import LLMRequest

__all__ = [
    "DENY_FIELDS",
    "KEY_VERSION",
    "KeyBuilder",
    "cache_key",
    "cache_key_from_body",
    "normalize_base_url",
]

KEY_VERSION = "v1"

#: Body fields that do not change the answer. ``n``, ``logprobs``, ``seed``... do: they stay.
DENY_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)

_TEXT_FIELDS = frozenset({"messages", "prompt"})  # strings inside: nothing to canonicalize
# One encoder built once (json.dumps with options builds a new one per call: ~3x slower);
# no circular-reference bookkeeping (a cycle ends in RecursionError, mapped below).
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)
_SECRET_QUERY_HINTS = ("key", "token", "secret", "sig", "password", "auth")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_base_url(base_url: str) -> str:
    """Lower-case scheme and host, no default port, no trailing slash, no credentials."""
    parts = urlsplit(base_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not any(hint in k.lower() for hint in _SECRET_QUERY_HINTS)
    ]
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), urlencode(sorted(query)), ""))


def cache_key_from_body(base_url: str, body: Mapping[str, Any]) -> str:
    """The key of a request given its JSON body (cassettes match recorded bodies on it)."""
    return _key(normalize_base_url(base_url), body)


def cache_key(request: LLMRequest, *, base_url: str, default_model: str) -> str:
    """The key of ``request`` sent to ``base_url`` (``default_model`` when it names none)."""
    return _key(normalize_base_url(base_url), request.body(default_model))


class KeyBuilder:
    """:func:`cache_key` for one endpoint, with the base URL normalized once.

    >>> r = LLMRequest(prompt="hi", endpoint="completions")
    >>> KeyBuilder("http://h/v1", "m")(r) == cache_key(r, base_url="http://h/v1/", default_model="m")
    True
    """

    __slots__ = ("base_url", "default_model")

    def __init__(self, base_url: str, default_model: str) -> None:
        self.base_url = normalize_base_url(base_url)
        self.default_model = default_model

    def __call__(self, request: LLMRequest) -> str:
        return _key(self.base_url, request.body(self.default_model))


def _key(normalized_base_url: str, body: Mapping[str, Any]) -> str:
    try:
        kept = {
            k: (v if k in _TEXT_FIELDS else _canonical(v)) for k, v in body.items() if k not in DENY_FIELDS
        }
        text = _ENCODER.encode({"base_url": normalized_base_url, "body": kept})
    except (TypeError, ValueError, RecursionError) as exc:
        raise CacheError(f"cannot build a cache key: the request body is not plain JSON ({exc})") from exc
    return f"{KEY_VERSION}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def _canonical(value: Any) -> Any:
    """Same value, same JSON: 0 and 0.0 are one temperature; tuples are lists."""
    if isinstance(value, (str, int)):  # bool is an int: kept as it is
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value
