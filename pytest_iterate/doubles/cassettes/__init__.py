"""Record and replay LLM calls: cassettes made for OpenAI-compatible endpoints.

Like vcrpy / pytest-recording, but matched on the body-aware cache key and keeping
stream chunks and their timings, so latency gates can run offline on real-shaped
latencies. Wire it under a client::

    from pytest_iterate.doubles.cassettes import cassette_transport
    transport = cassette_transport("none", "fixtures/cassettes/smollm2-standard.jsonl")
    client = LLMClient(config, transport=transport)

See :mod:`.format` for the file and :mod:`.transport` for the record modes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iterate.doubles.cassettes.format import (
    FORMAT_VERSION,
    Interaction,
    Timing,
    read_cassette,
    write_cassette,
)
from pytest_iterate.doubles.cassettes.transport import RECORD_MODES, CassetteTransport, RecordMode

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pytest_iterate.client.transport.base import Transport

__all__ = [
    "FORMAT_VERSION",
    "RECORD_MODES",
    "CassetteTransport",
    "Interaction",
    "RecordMode",
    "Timing",
    "cassette_transport",
    "read_cassette",
    "write_cassette",
]


def cassette_transport(
    mode: RecordMode | str,
    path: str | Path,
    *,
    inner: Transport | None = None,
    replay_timing: bool = False,
    secrets: Iterable[str] = (),
    **kwargs: Any,
) -> CassetteTransport:
    """A :class:`CassetteTransport` for the plugin's ``--iterate-record-mode`` and
    ``--iterate-cassette`` options (``--iterate-replay-timing`` sets ``replay_timing``).

    ``inner`` is the transport to record through (None: aiohttp, made when needed).
    A bad ``mode`` raises :class:`~pytest_iterate.client.errors.ConfigError`; a
    damaged cassette raises :class:`~pytest_iterate.client.errors.CassetteError`.
    """
    return CassetteTransport(inner, path, mode, replay_timing=replay_timing, secrets=secrets, **kwargs)
