"""Settings are validated once, before any scenario: one usage error (exit 4) naming the file
and the key, never a traceback per criterion after the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_iterate.client.config import IterateConfig, find_pyproject

ARGS = ("--iterate", "-p", "no:randomly", "--iterate-profile=zero")


def _usage_error(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    err = result.stderr.str()
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err
    return err


def test_a_bad_tool_iterate_value_stops_the_run_naming_pyproject_and_the_key(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyprojecttoml("[tool.iterate]\nmax_attempts = 0\n")
    err = _usage_error(pytester.runpytest(*ARGS))
    assert f"[tool.iterate] max_attempts in {pytester.path / 'pyproject.toml'}: 0 is out of range" in err
    assert not (pytester.path / "reports").exists()


def test_a_non_finite_timeout_from_the_environment_is_refused(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITERATE_REQUEST_TIMEOUT_S", "nan")
    err = _usage_error(pytester.runpytest(*ARGS))
    assert "ITERATE_REQUEST_TIMEOUT_S: 'nan' is not a finite number" in err


@pytest.mark.parametrize(
    ("files", "args", "message"),
    [
        (
            {"w.jsonl": '{"id": "a", "title": "t", "requirements": ["x"]}\n{"id": 5}\n'},
            ["--iterate-workload=w.jsonl"],
            "w.jsonl:2: ",
        ),
        ({"p.json": json.dumps({"name": "p", "ttft_base_s": -1})}, ["--iterate-profile=p.json"], "p.json"),
        ({}, ["--iterate-cassette=missing.jsonl"], "missing.jsonl: no such file to replay"),
        ({"c.jsonl": "not json\n"}, ["--iterate-cassette=c.jsonl"], "c.jsonl:1: damaged cassette line"),
    ],
    ids=["workload-line", "profile", "cassette-missing", "cassette-damaged"],
)
def test_a_bad_workload_profile_or_cassette_is_a_usage_error_before_the_run(
    pytester: pytest.Pytester, files: dict[str, str], args: list[str], message: str
) -> None:
    for name, text in files.items():
        pytester.path.joinpath(name).write_text(text)
    err = _usage_error(pytester.runpytest("--iterate", "-p", "no:randomly", *args))
    assert message in err


def test_the_current_folders_pyproject_wins_over_a_parent_rootdirs(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")  # the parent's config
    sub = pytester.mkdir("service")
    sub.joinpath("pyproject.toml").write_text('[project]\nname = "s"\n\n[tool.iterate]\nmax_attempts = 0\n')
    (pytester.path / "pyproject.toml").write_text('[project]\nname = "parent"\n')  # no [tool.iterate]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        result = pytester.runpytest(*ARGS)
        err = _usage_error(result)
        assert f"[tool.iterate] max_attempts in {sub / 'pyproject.toml'}" in err
        # iterate-bench reads the same file from the same folder
        assert find_pyproject(Path.cwd()) == sub / "pyproject.toml"
        with pytest.raises(Exception, match=r"max_attempts in .*service/pyproject.toml"):
            IterateConfig.load()


def test_a_path_option_in_two_words_that_moved_the_rootdir_is_warned_about(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("ci-cache") / "w.jsonl"
    elsewhere.write_text('{"id": "a", "title": "t", "requirements": ["x"]}\n')
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest(
        *ARGS, "--iterate-criteria=latency.e2e_mean", "--iterate-workload", str(elsewhere)
    )
    result.stdout.fnmatch_lines(
        [f"*--iterate-workload {elsewhere}: given as two words*write --iterate-workload={elsewhere}*"]
    )
    quiet = pytester.runpytest(
        *ARGS, "--iterate-criteria=latency.e2e_mean", f"--iterate-workload={elsewhere}"
    )
    assert "given as two words" not in quiet.stdout.str()
