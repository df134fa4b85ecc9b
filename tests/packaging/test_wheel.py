"""The distribution as a user installs it: one import package, the data inside it, entry points.

Builds the wheel with pip (the build backend comes from the package index, as on any
user's machine) and reads its file list; then runs ``pytest --iterate`` in a project
that has a ``harness`` package of its own on ``sys.path``.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = out.glob("pytest_iterate-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_installs_exactly_one_top_level_import_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"pytest_iterate"}
    assert not any(name.endswith(".pth") for name in names)


def test_the_harness_and_the_data_ship_inside_the_package(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for expected in (
        "pytest_iterate/harness/cli.py",
        "pytest_iterate/harness/reports/html_report.py",
        "pytest_iterate/harness/DEFINITIONS.md",
        "pytest_iterate/_fixtures/workloads/designs.jsonl",
        "pytest_iterate/_fixtures/profiles/v1.json",
        "pytest_iterate/plugin/acceptance/test_acceptance.py",
        "pytest_iterate/py.typed",
    ):
        assert expected in names, expected
    # the symlinks of the source tree are real files in the wheel, and nothing is there twice
    assert not any(n.startswith(("harness/", "fixtures/")) for n in names)


def test_the_entry_points_name_modules_inside_the_package(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    assert dict(parser["pytest11"]) == {"iterate": "pytest_iterate.plugin.hooks"}
    assert dict(parser["console_scripts"]) == {"iterate-bench": "pytest_iterate.harness.cli:main"}


def test_a_project_with_its_own_harness_package_runs_the_suite(pytester: pytest.Pytester) -> None:
    # the user's harness/ is first on sys.path (pythonpath = ["."]): ours must not be looked up there
    pytester.mkpydir("harness").joinpath("compare.py").write_text("RULES = 'the user s own'\n")
    pytester.makepyfile(
        test_mine="from harness.compare import RULES\n\ndef test_mine():\n"
        "    assert RULES == 'the user s own'\n"
    )
    pytester.makeini("[pytest]\npythonpath = .\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess(
        "--iterate", "--iterate-profile=zero", "--iterate-criteria=latency.e2e_mean", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=2)
    assert (pytester.path / "reports" / "iterate-report.json").is_file()
