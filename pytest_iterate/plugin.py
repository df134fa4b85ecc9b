"""The pytest plugin (entry point ``pytest11: iterate``). Inert unless ``--iterate`` is given."""

from __future__ import annotations
