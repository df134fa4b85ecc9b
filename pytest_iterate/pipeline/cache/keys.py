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

from pytest_iterate.pipeline.errors import CacheError
from pytest_iterate.pipeline.types import LLMRequest

__all__ = ["DENY_FIELDS", "KEY_VERSION", "cache_key", "cache_key_from_body", "normalize_base_url"]

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
    kept = {k: _canonical(v) for k, v in body.items() if k not in DENY_FIELDS}
    doc = {"base_url": normalize_base_url(base_url), "body": kept}
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CacheError(f"cannot build a cache key: the request body is not plain JSON ({exc})") from exc
    return f"{KEY_VERSION}:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def cache_key(request: LLMRequest, *, base_url: str, default_model: str) -> str:
    """The key of ``request`` sent to ``base_url`` (``default_model`` when it names none)."""
    return cache_key_from_body(base_url, request.body(default_model))


def _canonical(value: Any) -> Any:
    """Same value, same JSON: 0 and 0.0 are one temperature; tuples are lists."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value
