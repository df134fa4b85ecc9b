"""Stage timing and structured JSON logs.

A :class:`StageRecorder` belongs to one request. Each ``with rec.stage(name):`` (or
``async with``) records a :class:`StageTiming`: the start as wall-clock epoch seconds
(to line logs up across processes) and the duration on the monotonic clock (immune to
clock jumps). Every stage also goes to ``metrics.stage_duration{stage}`` and, when a
logger is given, to one structured log record (``event="stage"``).

JSON logs are opt-in: attach :class:`JsonFormatter` to a handler of the
``pytest_iterate`` logger yourself, or call :func:`enable_json_logs` (what the
pipeline does when ``config.json_logs`` is true). Records carry only the fields put
in ``extra={"iterate": {...}}``; request headers are never logged.

>>> rec = StageRecorder(None, None, "req-1")
>>> with rec.stage("prompt_build"):
...     pass
>>> [t.name for t in rec.timings]
['prompt_build']
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_iterate.client.metrics import IterateMetrics

__all__ = [
    "LOGGER_NAME",
    "JsonFormatter",
    "StageRecorder",
    "StageTimer",
    "StageTiming",
    "enable_json_logs",
    "get_logger",
]

LOGGER_NAME = "pytest_iterate"
_SECRET_KEYS = frozenset({"authorization", "api_key", "headers", "x-api-key"})


@dataclass(frozen=True, slots=True)
class StageTiming:
    """One stage of one request: ``start_s`` is epoch seconds, ``duration_s`` monotonic."""

    name: str
    start_s: float
    duration_s: float
    ok: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "start_s": self.start_s, "duration_s": self.duration_s, "ok": self.ok}


class StageTimer:
    """Times one stage; a context manager usable with ``with`` and ``async with``."""

    __slots__ = ("_recorder", "_start_mono", "_start_wall", "name")

    def __init__(self, recorder: StageRecorder, name: str) -> None:
        self._recorder = recorder
        self.name = name
        self._start_wall = 0.0
        self._start_mono = 0.0

    def __enter__(self) -> StageTimer:
        self._start_wall = self._recorder._wall()
        self._start_mono = self._recorder._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        duration = self._recorder._clock() - self._start_mono
        self._recorder._record(StageTiming(self.name, self._start_wall, duration, exc_type is None))

    async def __aenter__(self) -> StageTimer:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class StageRecorder:
    """Collects the stage timings of one request.

    ``metrics`` and ``logger`` may be None (nothing recorded there). ``clock`` is the
    monotonic clock for durations, ``wall`` the epoch clock for start timestamps; both
    are injectable for tests.
    """

    __slots__ = ("_clock", "_wall", "logger", "metrics", "request_id", "timings")

    def __init__(
        self,
        metrics: IterateMetrics | None,
        logger: logging.Logger | None,
        request_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.logger = logger
        self.request_id = request_id
        self.timings: list[StageTiming] = []
        self._clock = clock
        self._wall = wall

    def stage(self, name: str) -> StageTimer:
        """A context manager timing the stage ``name`` (``with`` or ``async with``)."""
        return StageTimer(self, name)

    def _record(self, timing: StageTiming) -> None:
        self.timings.append(timing)
        if self.metrics is not None:
            self.metrics.stage_duration.labels(timing.name).observe(timing.duration_s)
        logger = self.logger
        if logger is not None and logger.isEnabledFor(logging.INFO):
            logger.info(
                "stage %s %.6fs",
                timing.name,
                timing.duration_s,
                extra={
                    "iterate": {
                        "event": "stage",
                        "request_id": self.request_id,
                        "stage": timing.name,
                        "start_s": timing.start_s,
                        "duration_s": timing.duration_s,
                        "ok": timing.ok,
                    }
                },
            )

    def total_s(self) -> float:
        return sum(t.duration_s for t in self.timings)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message and the ``iterate`` extra.

    Keys that could hold secrets (``authorization``, ``api_key``, ``headers``) are
    dropped from the extra even if a caller put them there.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "iterate", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                if key.lower() not in _SECRET_KEYS:
                    data[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = record.exc_info[0].__name__
        return json.dumps(data, default=str, separators=(",", ":"))


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def enable_json_logs(
    stream: Any = None, level: int = logging.INFO, logger: logging.Logger | None = None
) -> logging.Handler:
    """Attach a stream handler with :class:`JsonFormatter` to the package logger.

    Returns the handler so the caller can remove it again (``logger.removeHandler``).
    """
    target = logger if logger is not None else get_logger()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    target.addHandler(handler)
    if target.level == logging.NOTSET or target.level > level:
        target.setLevel(level)
    return handler
