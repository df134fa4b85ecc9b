from __future__ import annotations

import io
import json
import logging

import pytest

from pytest_iterate.client.metrics import IterateMetrics
from pytest_iterate.client.telemetry import (
    JsonFormatter,
    StageRecorder,
    StageTiming,
    enable_json_logs,
)


class FakeClock:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall


def test_stage_records_start_and_duration_and_metric() -> None:
    clock = FakeClock()
    metrics = IterateMetrics()
    rec = StageRecorder(metrics, None, "r1", clock=clock.monotonic, wall=clock.time)
    with rec.stage("prompt_build"):
        clock.mono += 0.25
        clock.wall += 0.25
    assert rec.timings == [StageTiming("prompt_build", 1_700_000_000.0, 0.25, True)]
    value = metrics.registry.get_sample_value("iterate_stage_duration_seconds_sum", {"stage": "prompt_build"})
    assert value == pytest.approx(0.25)


async def test_async_stage_and_failure_marked() -> None:
    clock = FakeClock()
    rec = StageRecorder(None, None, "r2", clock=clock.monotonic, wall=clock.time)
    async with rec.stage("llm_call"):
        clock.mono += 1.5
    with pytest.raises(RuntimeError):
        async with rec.stage("post_process"):
            clock.mono += 0.5
            raise RuntimeError("boom")
    assert [(t.name, t.duration_s, t.ok) for t in rec.timings] == [
        ("llm_call", 1.5, True),
        ("post_process", 0.5, False),
    ]
    assert rec.total_s() == 2.0


def test_json_logs_one_object_per_stage_without_secrets() -> None:
    logger = logging.getLogger("pytest_iterate.test_telemetry")
    logger.propagate = False
    stream = io.StringIO()
    handler = enable_json_logs(stream, logger=logger)
    try:
        clock = FakeClock()
        rec = StageRecorder(None, logger, "req-42", clock=clock.monotonic, wall=clock.time)
        with rec.stage("cache_lookup"):
            clock.mono += 0.01
        logger.info("x", extra={"iterate": {"headers": {"Authorization": "Bearer sk-secret"}, "a": 1}})
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "stage"
    assert lines[0]["request_id"] == "req-42"
    assert lines[0]["stage"] == "cache_lookup"
    assert lines[0]["start_s"] == 1_700_000_000.0
    assert lines[0]["duration_s"] == pytest.approx(0.01)
    assert lines[1]["a"] == 1 and "headers" not in lines[1]
    assert "sk-secret" not in stream.getvalue()


def test_formatter_is_plain_logging_formatter() -> None:
    record = logging.LogRecord("pytest_iterate", logging.WARNING, __file__, 1, "hello %s", ("w",), None)
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "hello w" and data["level"] == "warning"
