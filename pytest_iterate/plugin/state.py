"""Where the plugin keeps its per-session state: ``config.stash`` (never a global).

Light on purpose: the hooks import this module on every pytest start, and the session
itself (:mod:`pytest_iterate.plugin.session`, which imports the harness and the
acceptance suite) only exists under ``--iterate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_iterate.plugin.options import IterateOptions, resolve

if TYPE_CHECKING:
    from pytest_iterate.plugin.session import IterateSession

__all__ = ["OPTIONS_KEY", "SESSION_KEY", "get_options", "get_session"]

SESSION_KEY = pytest.StashKey["IterateSession"]()
OPTIONS_KEY = pytest.StashKey[IterateOptions]()


def get_session(config: pytest.Config) -> IterateSession | None:
    """The session state under ``--iterate``; None otherwise."""
    return config.stash.get(SESSION_KEY, None)


def get_options(config: pytest.Config) -> IterateOptions:
    """The session's resolved options (resolved now if nothing has asked for them yet)."""
    if OPTIONS_KEY not in config.stash:
        config.stash[OPTIONS_KEY] = resolve(config)
    return config.stash[OPTIONS_KEY]
