"""Where ``iterate-bench`` keeps files between runs: the user cache directory, never the
current directory.

:func:`user_cache_dir` is ``$XDG_CACHE_HOME/pytest-iterate`` (``~/.cache/pytest-iterate``)
on Linux and other Unixes, ``~/Library/Caches/pytest-iterate`` on macOS and
``%LOCALAPPDATA%\\pytest-iterate\\Cache`` on Windows, the places platformdirs picks.
The response cache of ``iterate-bench run --cache`` lives in its ``responses`` folder
unless ``--cache-dir`` or ``ITERATE_CACHE_DIR`` says otherwise. Reports go to
``--report-dir``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["APP_NAME", "user_cache_dir"]

APP_NAME = "pytest-iterate"


def user_cache_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The user's cache folder for pytest-iterate (not created here)."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or Path.home())
    if platform == "win32":
        base = env.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / APP_NAME / "Cache"
    if platform == "darwin":
        return home / "Library" / "Caches" / APP_NAME
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".cache") / APP_NAME
