"""Options: --help text, precedence CLI > env > ini > default, usage errors, inertness."""

from __future__ import annotations

import pytest

from pytest_iterate.plugin.acceptance.criteria import CRITERIA
from pytest_iterate.plugin.options import OPTIONS, resolve


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    import os

    for name in list(os.environ):
        if name.startswith("ITERATE") or name.endswith("API_KEY"):
            monkeypatch.delenv(name)


def test_help_lists_every_option_with_its_text(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "pytest-iterate: LLM pipeline acceptance and benchmarks:",
            "  --iterate * run the V2 acceptance suite and write benchmark reports*",
            "  --iterate-endpoint=URL",
            "*'mock' (embedded loopback mock) or an OpenAI-compatible*",
            "  --iterate-model=NAME*model name sent to the endpoint*",
            "  --iterate-api-key-env=VAR",
            "  --iterate-workload=PATH",
            "  --iterate-profile=NAME",
            "  --iterate-concurrency=N,N",
            "  --iterate-report-dir=DIR",
            "  --iterate-threshold=ID=VALUE",
            "  --iterate-criteria=GLOB",
            "  --iterate-baseline=PATH",
            "  --iterate-compare-fail=EXPR",
            "  --iterate-save-baseline=PATH",
            "  --iterate-record-mode=MODE",
            "  --iterate-cassette=PATH",
            "  --iterate-replay-timing*",
        ]
    )
    text = result.stdout.str()
    for spec in OPTIONS:
        assert spec.cli in text
        assert f"  {spec.dest} (" in text  # the ini key
        assert f"env {spec.env}" in " ".join(text.split())
    flat = " ".join(text.split())
    for default in (
        "[default: mock]",
        "[default: gpt-4o-mini]",
        "[default: OPENAI_API_KEY]",
        "[default: v1]",
        "[default: 1,5,10,16]",
        "[default: reports]",
        "[default: *]",
        "[default: none]",
    ):
        assert default in flat


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--iterate-concurrency=1,x"],
            "*--iterate-concurrency: '1,x' is not a list of whole numbers >= 1; give comma-separated*",
        ),
        (["--iterate-concurrency=0"], "*--iterate-concurrency: '0' is not a list of whole numbers >= 1*"),
        (
            ["--iterate-threshold=latency.nope=2"],
            "*unknown criterion 'latency.nope'; known ids: latency.e2e_mean,*",
        ),
        (["--iterate-threshold=latency.e2e_mean=fast"], "*the value after '=' must be a finite number*"),
        (["--iterate-threshold=latency.e2e_mean=nan"], "*the value after '=' must be a finite number*"),
        (["--iterate-threshold=latency.e2e_mean"], "*give ID=VALUE*"),
        (["--iterate-endpoint=ftp://x"], "*'ftp://x' is not valid; give 'mock' or an http(s):// base URL*"),
        (["--iterate-profile=warp"], "*'warp' is not valid; give one of degraded, fast, v1, zero*"),
        (["--iterate-criteria=nothing.*"], "*the glob matches no criterion; known ids:*"),
        (["--iterate-record-mode=sometimes"], "*'sometimes' is not one of none, once, new, all*"),
        (["--iterate-record-mode=new"], "*needs --iterate-cassette PATH*"),
        (["--iterate-compare-fail=p95"], "*give METRIC:LIMIT such as p95:10%*"),
        (
            ["--iterate-workload=missing.jsonl"],
            "*'missing.jsonl' is not valid; give the path of an existing*",
        ),
        (["--iterate-api-key-env=sk-123 456"], "*is not an environment variable name; give the NAME*"),
    ],
)
def test_bad_value_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, args: list[str], expected: str
) -> None:
    result = pytester.runpytest("--iterate", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "sk-123" not in result.stderr.str()  # a key typed where a variable name goes is not echoed


def test_bad_env_value_names_the_variable(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITERATE_CONCURRENCY", "many")
    result = pytester.runpytest("--iterate")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ITERATE_CONCURRENCY: 'many' is not a list of whole numbers*"])


def test_precedence_cli_over_env_over_ini_over_default(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\niterate_concurrency = 3\n"
        "iterate_model = ini-model\niterate_profile = fast\n"
    )
    monkeypatch.setenv("ITERATE_MODEL", "env-model")
    monkeypatch.setenv("ITERATE_PROFILE", "zero")
    config = pytester.parseconfig("--iterate-profile=degraded")
    opts = resolve(config)
    assert opts.profile == "degraded"  # CLI
    assert opts.model == "env-model"  # env over ini
    assert opts.concurrency == (3,)  # ini over default
    assert opts.endpoint == "mock" and opts.report_dir.name == "reports"  # defaults
    assert not opts.enabled


def test_thresholds_repeatable_and_criteria_globs(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfig(
        "--iterate-threshold=latency.e2e_mean=2.5",
        "--iterate-threshold=cache.hit_rate_repeat=40",
        "--iterate-criteria=latency.*,cache.*",
    )
    opts = resolve(config)
    assert dict(opts.thresholds) == {"latency.e2e_mean": 2.5, "cache.hit_rate_repeat": 40.0}
    assert opts.threshold_for("latency.overhead_mean") == 0.3
    assert opts.selected_criteria() == [
        "latency.e2e_mean",
        "latency.iteration_mean_c5",
        "latency.overhead_mean",
        "cache.hit_rate_repeat",
    ]


def test_without_iterate_nothing_is_collected_or_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_ok():\n    assert True\n")
    # a user's machine without the [benchmark] extra: pytest-benchmark (in our dev venv)
    # would write its own empty .benchmarks/ on any run
    result = pytester.runpytest("-v", "-p", "no:benchmark")
    result.assert_outcomes(passed=1)
    assert "test_criterion" not in result.stdout.str()
    assert "pytest-iterate" not in result.stdout.str()
    written = {p.name for p in pytester.path.iterdir()} - {"__pycache__", ".pytest_cache"}
    assert written == {"test_user.py", "tox.ini"}


def test_iterate_collects_the_suite_whatever_the_paths(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="def test_ok():\n    assert True\n")
    result = pytester.runpytest("--iterate", "--co", "-q", "test_user.py")
    result.stdout.fnmatch_lines(
        [
            "*test_user.py::test_ok",
            "*::test_criterion?latency.e2e_mean?",
            "*::test_criterion?degradation.busy_fast?",
            f"*{len(CRITERIA) + 1} tests collected*",
        ]
    )
    assert not (pytester.path / "reports").exists()


def test_without_iterate_bad_iterate_values_do_not_break_a_plain_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITERATE_CONCURRENCY", "many")
    pytester.makepyfile(test_user="def test_ok():\n    assert True\n")
    pytester.runpytest().assert_outcomes(passed=1)
