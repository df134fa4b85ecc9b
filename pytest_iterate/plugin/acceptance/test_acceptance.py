"""The V2 acceptance suite: one test per criterion of docs/DESIGN.md, ``test_criterion[<id>]``.

Collected by the plugin only under ``pytest --iterate`` (whatever the user's test
paths are). Each criterion reads a shared scenario that runs once per session
(:mod:`pytest_iterate.plugin.acceptance.scenarios`); the observed value, threshold and unit
go to the test's ``user_properties`` (so ``--junitxml`` carries them) and into the report.
"""

from __future__ import annotations

import pytest

from pytest_iterate.plugin.state import get_session


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "criterion_id" in metafunc.fixturenames:
        session = get_session(metafunc.config)
        ids = session.options.selected_criteria() if session is not None else []
        metafunc.parametrize("criterion_id", ids, ids=ids)


def test_criterion(criterion_id: str, request: pytest.FixtureRequest) -> None:
    session = get_session(request.config)
    if session is None:
        pytest.skip("the acceptance suite runs under pytest --iterate")
    session.check_criterion(criterion_id, request.node)
