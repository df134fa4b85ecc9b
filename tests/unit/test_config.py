from __future__ import annotations

from pathlib import Path

import pytest

from pytest_iterate.client.config import IterateConfig
from pytest_iterate.client.errors import ConfigError


def write_pyproject(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_defaults() -> None:
    cfg = IterateConfig.load(environ={}, pyproject=None)
    assert cfg.base_url == "http://127.0.0.1:8000/v1"  # a local server, never the test double
    assert cfg.max_attempts == 3 and cfg.request_timeout_s == 10.0
    assert cfg.transport == "aiohttp"


def test_precedence_cli_over_env_over_pyproject_over_default(tmp_path: Path) -> None:
    py = write_pyproject(
        tmp_path,
        '[tool.iterate]\nmax_concurrent_requests = 3\nbatch_size = 4\nmodel = "from-pyproject"\n',
    )
    env = {"ITERATE_MAX_CONCURRENT_REQUESTS": "5", "ITERATE_MODEL": "from-env", "UNRELATED": "x"}
    cfg = IterateConfig.load({"model": "from-cli"}, environ=env, pyproject=py)
    assert cfg.model == "from-cli"  # CLI beats env
    assert cfg.max_concurrent_requests == 5  # env beats pyproject
    assert cfg.batch_size == 4  # pyproject beats default
    assert cfg.cpu_worker_pool_size == 2  # default


def test_env_values_are_coerced() -> None:
    env = {
        "ITERATE_JSON_LOGS": "yes",
        "ITERATE_REQUEST_TIMEOUT_S": "2.5",
        "ITERATE_CACHE_TTL_S": "none",
        "ITERATE_TRANSPORT": "httpx",
        "ITERATE_READ_TIMEOUT_S": "30",
    }
    cfg = IterateConfig.load(environ=env, pyproject=None)
    assert cfg.json_logs is True and cfg.request_timeout_s == 2.5 and cfg.read_timeout_s == 30.0
    assert cfg.cache_ttl_s is None and cfg.transport == "httpx"


def test_unknown_key_in_pyproject_is_named(tmp_path: Path) -> None:
    py = write_pyproject(tmp_path, "[tool.iterate]\nmax_conccurrent = 3\n")
    with pytest.raises(ConfigError, match="'max_conccurrent'") as info:
        IterateConfig.load(environ={}, pyproject=py)
    assert "known keys" in str(info.value) and "max_concurrent_requests" in str(info.value)


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match="'retries'"):
        IterateConfig.load({"retries": 3}, environ={}, pyproject=None)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_concurrent_requests", "-1"),
        ("max_connections", "0"),
        ("max_attempts", "0"),
        ("max_queue", "-5"),
        ("batch_size", "-2"),
        ("batch_size", "1000"),
        ("batch_window_s", "-0.5"),
        ("batch_window_s", "60"),
        ("request_timeout_s", "-1"),
        ("backoff_initial_s", "0"),
        ("retry_after_cap_s", "-3"),
        ("read_timeout_s", "0"),
        ("read_timeout_s", "-2.5"),
    ],
)
def test_negative_or_zero_limits_name_the_value(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        IterateConfig.load({key: value}, environ={}, pyproject=None)
    assert key in str(info.value) and value.lstrip("-") in str(info.value)


def test_negative_limit_from_env_is_rejected_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^ITERATE_MAX_CONCURRENT_REQUESTS: '-4' is out of range; .* >= 1"):
        IterateConfig.load(environ={"ITERATE_MAX_CONCURRENT_REQUESTS": "-4"}, pyproject=None)


def test_not_a_number_names_value_and_type() -> None:
    with pytest.raises(ConfigError, match=r"max_attempts: 'three' is not a whole number"):
        IterateConfig.load({"max_attempts": "three"}, environ={}, pyproject=None)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", float("nan"), float("inf")])
@pytest.mark.parametrize("key", ["request_timeout_s", "read_timeout_s", "backoff_initial_s", "cache_ttl_s"])
def test_non_finite_numbers_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: .* is not a finite number"):
        IterateConfig.load({key: value}, environ={}, pyproject=None)
    with pytest.raises(ConfigError, match=rf"^ITERATE_{key.upper()}: .* is not a finite number"):
        IterateConfig.load(environ={f"ITERATE_{key.upper()}": str(value)}, pyproject=None)


def test_a_bad_pyproject_value_names_the_file_and_the_key(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.iterate]\nmax_attempts = 0\nrequest_timeout_s = nan\n")
    with pytest.raises(ConfigError) as info:
        IterateConfig.load(environ={}, pyproject=pyproject)
    assert str(info.value).startswith(f"[tool.iterate] max_attempts in {pyproject}: 0 is out of range")


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "localhost/v1", "ftp://host/v1"])
def test_base_url_without_scheme(url: str) -> None:
    with pytest.raises(ConfigError, match="base_url") as info:
        IterateConfig.load({"base_url": url}, environ={}, pyproject=None)
    assert url in str(info.value) and "http://" in str(info.value)


def test_bad_choice_lists_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"transport: 'curl' is not one of aiohttp, httpx"):
        IterateConfig.load({"transport": "curl"}, environ={}, pyproject=None)


def test_missing_api_key_variable_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    cfg = IterateConfig.load(
        {"api_key_env": "MY_LLM_KEY", "api_key_required": "true", "base_url": "https://llm.example/v1"},
        environ={},
        pyproject=None,
    )
    with pytest.raises(ConfigError, match="'MY_LLM_KEY'") as info:
        _ = cfg.api_key
    assert "https://llm.example/v1" in str(info.value)


def test_api_key_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-do-not-print")
    cfg = IterateConfig(api_key_env="MY_LLM_KEY")
    key = cfg.api_key
    assert key is not None and key.reveal() == "sk-do-not-print"
    assert "sk-do-not-print" not in repr(cfg)
    assert "sk-do-not-print" not in repr(key) and "sk-do-not-print" not in str(key)


def test_credentials_in_base_url_never_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    cfg = IterateConfig(base_url="https://bob:sk-in-url@llm.example/v1", api_key_env="MY_LLM_KEY")
    assert "sk-in-url" not in repr(cfg) and "base_url='https://***@llm.example/v1'" in repr(cfg)
    with pytest.raises(ConfigError) as info:
        _ = cfg.replace(api_key_required=True).api_key
    assert "sk-in-url" not in str(info.value) and "https://***@llm.example/v1" in str(info.value)
    with pytest.raises(ConfigError, match=r"'\*\*\*@llm.example/v1' is not an http\(s\):// URL") as bad:
        IterateConfig(base_url="bob:sk-in-url@llm.example/v1")
    assert "sk-in-url" not in str(bad.value)


def test_missing_optional_api_key_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    assert IterateConfig(api_key_env="MY_LLM_KEY").api_key is None


def test_config_is_frozen() -> None:
    cfg = IterateConfig()
    with pytest.raises(AttributeError):
        cfg.model = "x"  # type: ignore[misc]
    assert cfg.replace(model="y").model == "y" and cfg.model == "gpt-4o-mini"


def test_batch_strategy_names_the_value_and_the_choices() -> None:
    expected = r"ITERATE_BATCH_STRATEGY: 'fast'.*auto, native, packed, concurrent"
    with pytest.raises(ConfigError, match=expected):
        IterateConfig.load({}, environ={"ITERATE_BATCH_STRATEGY": "fast"}, pyproject=None)
    assert IterateConfig.load({}, environ={}, pyproject=None).batch_size == 1  # off unless asked for
