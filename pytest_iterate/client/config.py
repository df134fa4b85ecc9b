"""The pipeline's configuration: one frozen object, read once, validated once.

Precedence, written down once and used everywhere (pytest options included):

    CLI (explicit overrides) > ITERATE_* environment variables > [tool.iterate] in
    pyproject.toml (or the pytest ini keys iterate_*) > the defaults below

``base_url`` defaults to ``http://127.0.0.1:8000/v1``, the address local
OpenAI-compatible servers (llama.cpp's ``llama-server --port 8000``, vLLM, the
project's own ``iterate-bench serve-mock``) listen on; point it at any other endpoint.

The API key itself is never a config value: ``api_key_env`` names the environment
variable that holds it, and :attr:`IterateConfig.api_key` reads it on demand as a
:class:`~pytest_iterate.client.secret.Secret` (its repr is ``***``), so it never sits
as a plain string in a frame a traceback could show. Credentials written into
``base_url`` (``http://user:KEY@host/v1``) are redacted in the repr and in messages.

>>> cfg = IterateConfig.load(overrides={"max_concurrent_requests": "4"}, environ={}, pyproject=None)
>>> cfg.max_concurrent_requests
4
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from pytest_iterate.client.errors import ConfigError
from pytest_iterate.client.secret import Secret, redact_url

__all__ = ["DEFAULT_BASE_URL", "ENV_PREFIX", "IterateConfig", "TokenPolicy", "TransportName"]

ENV_PREFIX = "ITERATE_"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # a local OpenAI-compatible server

TokenPolicy = Literal["truncate", "split", "shrink_output", "refuse"]
TransportName = Literal["aiohttp", "httpx"]


@dataclass(frozen=True, slots=True)
class IterateConfig:
    """Settings of the client, retry, throttle, cache, token guard and pipeline."""

    base_url: str = DEFAULT_BASE_URL
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    api_key_required: bool = False
    transport: TransportName = "aiohttp"
    # connection pool and throttle
    max_connections: int = 100
    max_concurrent_requests: int = 10
    max_queue: int = 1000
    # timeouts and retry
    request_timeout_s: float = 10.0  # one whole attempt, reading the body or stream included
    connect_timeout_s: float = 5.0
    read_timeout_s: float | None = None  # longest silence before the next byte; None: no such bound
    max_attempts: int = 3
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 8.0
    retry_after_cap_s: float = 30.0
    # cache
    cache_enabled: bool = True
    cache_dir: str = ".iterate_cache"
    cache_memory_size: int = 1024
    cache_ttl_s: float | None = None
    cache_nondeterministic: bool = False
    # token guard
    token_policy: TokenPolicy = "truncate"
    context_window: int | None = None  # None: from the model table
    token_safety_margin: float = 0.05
    default_max_tokens: int = 512
    # pipeline
    batch_size: int = 8
    cpu_worker_pool_size: int = 2
    store_path: str = ":memory:"
    json_logs: bool = False

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def api_key(self) -> Secret | None:
        """The key read from ``api_key_env`` (None when unset); never stored in the config."""
        key = os.environ.get(self.api_key_env)
        if key:
            return Secret(key)
        if self.api_key_required:
            raise ConfigError(
                f"the endpoint {redact_url(self.base_url)} needs an API key, but the environment "
                f"variable {self.api_key_env!r} is not set"
            )
        return None

    def __repr__(self) -> str:
        shown = (
            f"{f.name}={redact_url(self.base_url) if f.name == 'base_url' else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"IterateConfig({', '.join(shown)})"

    def replace(self, **changes: Any) -> IterateConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        pyproject: Path | Literal["auto"] | None = "auto",
    ) -> IterateConfig:
        """Build a config from overrides > ``ITERATE_*`` env > ``[tool.iterate]`` > defaults."""
        values: dict[str, Any] = {}
        if pyproject == "auto":
            pyproject = _find_pyproject(Path.cwd())
        if pyproject is not None:
            values.update(_check_keys(read_pyproject_table(pyproject), f"[tool.iterate] in {pyproject}"))
        env = os.environ if environ is None else environ
        known = set(cls.field_names())
        for name, raw in env.items():
            if name.startswith(ENV_PREFIX):
                key = name[len(ENV_PREFIX):].lower()
                if key in known:
                    values[key] = raw
        values.update(_check_keys(dict(overrides or {}), "overrides"))
        return cls(**{k: coerce(k, v) for k, v in values.items()})


def read_pyproject_table(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    table = data.get("tool", {}).get("iterate", {})
    return dict(table) if isinstance(table, dict) else {}


def _find_pyproject(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _check_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    known = IterateConfig.field_names()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))} in {source}; "
            f"known keys: {', '.join(known)}"
        )
    return values


_FIELD_TYPES: dict[str, Any] = {}


def coerce(name: str, value: Any) -> Any:
    """Turn a string from the environment or the command line into the field's type."""
    if not _FIELD_TYPES:
        hints = {f.name: f.type for f in fields(IterateConfig)}
        _FIELD_TYPES.update(hints)
    kind = str(_FIELD_TYPES[name])
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "float | None" or kind == "int | None":
            if text.lower() in {"", "none"}:
                return None
            return float(text) if kind.startswith("float") else int(text)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a valid {kind}") from None
    return text


def _validate(cfg: IterateConfig) -> None:
    if "://" not in cfg.base_url or cfg.base_url.split("://", 1)[0] not in {"http", "https"}:
        raise ConfigError(
            f"base_url={redact_url(cfg.base_url)!r} has no http:// or https:// scheme; "
            "give e.g. http://127.0.0.1:8000/v1"
        )
    for name in (
        "max_connections",
        "max_concurrent_requests",
        "max_attempts",
        "cache_memory_size",
        "batch_size",
        "cpu_worker_pool_size",
        "default_max_tokens",
    ):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name}={value!r} must be a whole number >= 1")
    if not isinstance(cfg.max_queue, int) or cfg.max_queue < 0:
        raise ConfigError(f"max_queue={cfg.max_queue!r} must be a whole number >= 0")
    for name in (
        "request_timeout_s",
        "connect_timeout_s",
        "backoff_initial_s",
        "backoff_max_s",
        "retry_after_cap_s",
    ):
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{name}={value!r} must be a number > 0")
    if cfg.read_timeout_s is not None and (
        not isinstance(cfg.read_timeout_s, (int, float)) or cfg.read_timeout_s <= 0
    ):
        raise ConfigError(f"read_timeout_s={cfg.read_timeout_s!r} must be a number > 0 or None")
    if cfg.cache_ttl_s is not None and cfg.cache_ttl_s <= 0:
        raise ConfigError(f"cache_ttl_s={cfg.cache_ttl_s!r} must be > 0 or None")
    if cfg.context_window is not None and cfg.context_window < 16:
        raise ConfigError(f"context_window={cfg.context_window!r} must be >= 16 or None")
    if not 0 <= cfg.token_safety_margin < 0.5:
        raise ConfigError(f"token_safety_margin={cfg.token_safety_margin!r} must be in [0, 0.5)")
    _check_choice("token_policy", cfg.token_policy, get_args(TokenPolicy))
    _check_choice("transport", cfg.transport, get_args(TransportName))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; valid values: {', '.join(choices)}")
