"""The pytest plugin (entry point ``pytest11: iterate``). Inert unless ``--iterate`` is given.

Hooks only; the logic lives in :mod:`pytest_iterate.plugin.options` (the option table and
its resolution), :mod:`pytest_iterate.plugin.session` (per-session state, reports, gates),
:mod:`pytest_iterate.plugin.fixtures` and :mod:`pytest_iterate.plugin.budget` (the marker).

Under ``--iterate`` the shipped acceptance suite
(``pytest_iterate/plugin/acceptance/test_acceptance.py``) is added to the paths pytest
collects. With pytest-xdist, ``--dist load`` becomes ``loadfile`` (one worker runs the
acceptance file and its shared scenarios); every worker's
criteria and ``iterate_bench`` runs travel to the controller, which writes the report.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_iterate.plugin.budget import MARKER, MARKER_HELP, budget_from_marker, violations
from pytest_iterate.plugin.fixtures import BENCH_KEY
from pytest_iterate.plugin.options import PATH_OPTIONS, add_options, is_enabled
from pytest_iterate.plugin.state import SESSION_KEY, get_options, get_session

pytest_plugins = ["pytest_iterate.plugin.fixtures"]

ACCEPTANCE_FILE = Path(__file__).resolve().parent / "acceptance" / "test_acceptance.py"
# the suite's node id when it is installed outside the rootdir (site-packages): pytest
# would otherwise give it an empty file part ("::test_criterion[latency.e2e_mean]")
ACCEPTANCE_NODE_PATH = "pytest_iterate/plugin/acceptance/test_acceptance.py"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: {MARKER_HELP}")
    if not is_enabled(config):
        return  # inert: the other options are resolved only if a fixture asks for them
    # imported here, not at module top: the session pulls in the harness and the acceptance
    # suite (tens of ms), which a run without --iterate must not pay for
    from pytest_iterate.plugin.session import IterateSession

    state = IterateSession(config, get_options(config))
    state.check_inputs()  # a bad setting, file or path stops the run now, not after it
    _warn_if_a_path_value_moved_the_rootdir(config)
    config.stash[SESSION_KEY] = state
    path = str(ACCEPTANCE_FILE)
    if path not in config.args:  # xdist workers may get the controller's args already
        config.args.append(path)
    if config.pluginmanager.hasplugin("xdist"):
        _group_acceptance_tests(config)
        config.pluginmanager.register(_XdistBridge(config), "iterate-xdist")


def _warn_if_a_path_value_moved_the_rootdir(config: pytest.Config) -> None:
    """``--iterate-workload /abs/file.jsonl`` (two words): pytest reads the value as a test
    path while it picks the rootdir, before the plugin's options exist, so the rootdir can
    move to an ancestor of that file and the project's ini is then ignored (a known pytest
    behaviour). ``--iterate-workload=/abs/file.jsonl`` does not do that."""
    args = list(config.invocation_params.args)
    here = Path(config.invocation_params.dir).resolve()
    for flag, value in itertools.pairwise(args):
        if flag not in PATH_OPTIONS:
            continue
        path = (here / value).resolve()
        if path.exists() and not path.is_relative_to(here) and config.rootpath in path.parents:
            config.issue_config_time_warning(
                pytest.PytestConfigWarning(
                    f"{flag} {value}: given as two words, the path took part in choosing pytest's "
                    f"rootdir ({config.rootpath}; inifile: {config.inipath}); write {flag}={value} "
                    "so the project's own configuration is used"
                ),
                stacklevel=2,
            )


def _group_acceptance_tests(config: pytest.Config) -> None:
    """Under ``-n N`` with the default ``--dist load``, switch to ``loadfile`` so one worker
    runs the whole acceptance file (its scenarios are shared, and two workers measuring at
    the same time would disturb each other). ``xdist_group`` cannot do it: the suite file
    lives outside the rootdir and pytest 9 drops xdist's group suffix from such node ids."""
    if not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadfile"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Name the shipped suite ``pytest_iterate/plugin/acceptance/test_acceptance.py`` in node ids,
    JUnit class names and xdist's file grouping, wherever the package is installed."""
    if module_path != ACCEPTANCE_FILE or module_path.is_relative_to(parent.config.rootpath):
        return None  # pytest's own id is a path relative to the rootdir: keep it
    return pytest.Module.from_parent(parent, path=module_path, nodeid=ACCEPTANCE_NODE_PATH)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        mark = item.get_closest_marker(MARKER)
        if mark is not None:
            budget_from_marker(mark, item.nodeid)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The criteria this run will measure (after -k, --deselect, --iterate-criteria): a run
    that ends before all of them did is incomplete."""
    state = get_session(session.config)
    if state is not None and getattr(session.config, "workeroutput", None) is None:
        state.expect(item.nodeid for item in session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    result = yield
    mark = item.get_closest_marker(MARKER)
    if mark is not None:
        runs = item.stash.get(BENCH_KEY, [])
        if not runs:
            pytest.fail(
                f"@pytest.mark.{MARKER} needs at least one iterate_bench run in the test", pytrace=False
            )
        missed = violations(budget_from_marker(mark, item.nodeid), runs)
        if missed:
            pytest.fail("iterate_budget exceeded:\n  " + "\n  ".join(missed), pytrace=False)
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = get_session(session.config)
    if state is None:
        return
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller writes the report
        workeroutput["iterate"] = state.to_wire()
        return
    stopped = session.shouldstop or session.shouldfail
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    force = state.finish(interrupted=interrupted, stopped=str(stopped) if stopped else None)
    if force is not None and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = force


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = get_session(config)
    if state is not None and getattr(config, "workeroutput", None) is None:
        state.terminal_summary(terminalreporter)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = get_session(config)
    if state is not None:
        state.close()


class _XdistBridge:
    """Controller side of xdist: merge what each worker measured."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        state = get_session(self.config)
        if state is not None:
            state.expect(ids)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        state = get_session(self.config)
        data = getattr(node, "workeroutput", {}).get("iterate")
        if state is not None and data:
            state.merge_wire(data)
