"""A design request: what the pipeline turns into a design artifact (code) through an LLM.

One line of a workload file is the JSON form of one :class:`DesignRequest`::

    {"id": "d001", "title": "Rate limiter", "requirements": ["token bucket", "thread safe"],
     "constraints": ["stdlib only"], "language": "python", "max_tokens": 256, "extra": {}}

``id``, ``title`` and ``requirements`` are required; the rest have defaults.

>>> r = DesignRequest.from_json({"id": "x", "title": "T", "requirements": ["a"]})
>>> r.language, r.constraints, r.max_tokens
('python', (), None)
>>> DesignRequest.from_json(r.to_json()) == r
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DesignRequest"]

_KNOWN_FIELDS = ("id", "title", "requirements", "constraints", "language", "max_tokens", "extra")


@dataclass(frozen=True, slots=True)
class DesignRequest:
    """One design task. ``extra`` is free-form data a custom stage may use (not sent to the LLM)."""

    id: str
    title: str
    requirements: tuple[str, ...]
    constraints: tuple[str, ...] = ()
    language: str = "python"
    max_tokens: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (a plain dict; lists instead of tuples)."""
        data: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "requirements": list(self.requirements),
            "constraints": list(self.constraints),
            "language": self.language,
            "max_tokens": self.max_tokens,
        }
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    def to_json_text(self) -> str:
        """Canonical JSON text (sorted keys), used for storage and content hashes."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: Any) -> DesignRequest:
        """Build from the JSON form; raises ``ValueError`` naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_KNOWN_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(map(repr, unknown))}; known fields: {', '.join(_KNOWN_FIELDS)}"
            )
        for name in ("id", "title"):
            if name not in data:
                raise ValueError(f"missing required field {name!r}")
            if not isinstance(data[name], str) or not data[name].strip():
                raise ValueError(f"field {name!r} must be a non-empty string, got {data[name]!r}")
        requirements = _strings(data, "requirements", required=True)
        if not requirements:
            raise ValueError("field 'requirements' must list at least one requirement")
        constraints = _strings(data, "constraints", required=False)
        language = data.get("language", "python")
        if not isinstance(language, str) or not language.strip():
            raise ValueError(f"field 'language' must be a non-empty string, got {language!r}")
        max_tokens = data.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            raise ValueError(f"field 'max_tokens' must be a whole number >= 1 or null, got {max_tokens!r}")
        extra = data.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError(f"field 'extra' must be an object, got {type(extra).__name__}")
        return cls(
            id=data["id"],
            title=data["title"],
            requirements=requirements,
            constraints=constraints,
            language=language.strip().lower(),
            max_tokens=max_tokens,
            extra=extra,
        )


def _strings(data: Mapping[str, Any], name: str, *, required: bool) -> tuple[str, ...]:
    if name not in data:
        if required:
            raise ValueError(f"missing required field {name!r}")
        return ()
    value = data[name]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"field {name!r} must be a list of strings")
    return tuple(value)
