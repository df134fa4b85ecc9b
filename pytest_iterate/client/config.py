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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from pytest_iterate.client.errors import ConfigError
from pytest_iterate.client.secret import Secret, redact_url
from pytest_iterate.client.values import (
    to_bool,
    to_choice,
    to_env_var_name,
    to_float,
    to_http_url,
    to_int,
    to_name,
    to_optional,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_PREFIX",
    "BatchStrategy",
    "IterateConfig",
    "TokenCounting",
    "TokenPolicy",
    "TransportName",
    "find_pyproject",
]

ENV_PREFIX = "ITERATE_"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # a local OpenAI-compatible server

TokenPolicy = Literal["truncate", "split", "shrink_output", "refuse"]
TokenCounting = Literal["auto", "estimate"]
BatchStrategy = Literal["auto", "native", "packed", "concurrent"]
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
    token_counting: TokenCounting = "auto"  # auto: probe the endpoint, exact counts where offered
    default_max_tokens: int = 512
    # pipeline
    batch_size: int = 1  # > 1: cache misses within batch_window_s go out together (batch_llm_call)
    batch_window_s: float = 0.02
    batch_strategy: BatchStrategy = "auto"
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
        start: Path | None = None,
    ) -> IterateConfig:
        """Build a config from overrides > ``ITERATE_*`` env > ``[tool.iterate]`` > defaults.

        A bad value raises :class:`ConfigError` naming where it came from (the
        pyproject.toml path and key, the environment variable, or the override).
        """
        values: dict[str, tuple[Any, str]] = {}
        if pyproject == "auto":
            pyproject = find_pyproject(start or Path.cwd())
        if pyproject is not None:
            table = _check_keys(read_pyproject_table(pyproject), f"[tool.iterate] in {pyproject}")
            values.update({k: (v, f"[tool.iterate] {k} in {pyproject}") for k, v in table.items()})
        env = os.environ if environ is None else environ
        known = set(cls.field_names())
        for name, raw in env.items():
            if name.startswith(ENV_PREFIX):
                key = name[len(ENV_PREFIX) :].lower()
                if key in known:
                    values[key] = (raw, name)
        overrides = _check_keys(dict(overrides or {}), "overrides")
        values.update({k: (v, k) for k, v in overrides.items()})
        return cls(**{k: coerce(k, v, source) for k, (v, source) in values.items()})


def read_pyproject_table(path: Path) -> dict[str, Any]:
    table = _tool_tables(path).get("iterate", {})
    if not isinstance(table, dict):
        raise ConfigError(f"[tool.iterate] in {path} is not a table")
    return dict(table)


def find_pyproject(start: Path) -> Path | None:
    """The pyproject.toml whose ``[tool.iterate]`` applies to a run started in ``start``: the
    nearest one, from ``start`` upward, that has such a table (a pyproject.toml without one
    is passed over). ``pytest --iterate`` and ``iterate-bench`` both start from the current
    folder, so they read the same file whatever pytest's rootdir is."""
    for folder in (start.resolve(), *start.resolve().parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and "iterate" in _tool_tables(candidate):
            return candidate
    return None


def _tool_tables(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    tool = data.get("tool", {})
    return tool if isinstance(tool, dict) else {}


def _check_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    known = IterateConfig.field_names()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(map(repr, unknown))} in {source}; "
            f"known keys: {', '.join(known)}"
        )
    return values


_optional_positive = to_optional(lambda v: to_float(v, above=0))

# one parser per field: a string from the environment or a typed value from TOML or Python
_PARSERS: dict[str, Callable[[object], Any]] = {
    "base_url": to_http_url,
    "model": to_name,
    "api_key_env": to_env_var_name,
    "api_key_required": to_bool,
    "transport": lambda v: to_choice(v, get_args(TransportName)),
    "max_connections": lambda v: to_int(v, minimum=1),
    "max_concurrent_requests": lambda v: to_int(v, minimum=1),
    "max_queue": lambda v: to_int(v, minimum=0),
    "request_timeout_s": lambda v: to_float(v, above=0),
    "connect_timeout_s": lambda v: to_float(v, above=0),
    "read_timeout_s": _optional_positive,
    "max_attempts": lambda v: to_int(v, minimum=1, maximum=100),
    "backoff_initial_s": lambda v: to_float(v, above=0),
    "backoff_max_s": lambda v: to_float(v, above=0),
    "retry_after_cap_s": lambda v: to_float(v, above=0),
    "cache_enabled": to_bool,
    "cache_dir": lambda v: to_name(v) if not isinstance(v, str) or not v.strip() else v.strip(),
    "cache_memory_size": lambda v: to_int(v, minimum=1),
    "cache_ttl_s": _optional_positive,
    "cache_nondeterministic": to_bool,
    "token_policy": lambda v: to_choice(v, get_args(TokenPolicy)),
    "context_window": to_optional(lambda v: to_int(v, minimum=16)),
    "token_safety_margin": lambda v: to_float(v, minimum=0, maximum=0.49),
    "token_counting": lambda v: to_choice(v, get_args(TokenCounting)),
    "default_max_tokens": lambda v: to_int(v, minimum=1),
    "batch_size": lambda v: to_int(v, minimum=1, maximum=256),
    "batch_window_s": lambda v: to_float(v, minimum=0, maximum=10),
    "batch_strategy": lambda v: to_choice(v, get_args(BatchStrategy)),
    "cpu_worker_pool_size": lambda v: to_int(v, minimum=1),
    "store_path": lambda v: to_name(v) if not isinstance(v, str) or not v.strip() else v.strip(),
    "json_logs": to_bool,
}


def coerce(name: str, value: Any, source: str | None = None) -> Any:
    """``value`` (a string from the environment, or already typed) as field ``name``'s type.

    Raises :class:`ConfigError` naming ``source`` (default: the field name) and what is accepted.
    """
    try:
        return _PARSERS[name](value)
    except ValueError as exc:
        raise ConfigError(f"{source or name}: {exc}") from None


def _validate(cfg: IterateConfig) -> None:
    for name in _PARSERS:
        coerce(name, getattr(cfg, name))
    if cfg.backoff_max_s < cfg.backoff_initial_s:
        raise ConfigError(
            f"backoff_max_s={cfg.backoff_max_s!r} is below backoff_initial_s={cfg.backoff_initial_s!r}; "
            "give a largest backoff >= the first one"
        )
