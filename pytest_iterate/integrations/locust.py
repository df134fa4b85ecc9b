"""Locust drives the pipeline (or bare HTTP) and writes the reports ``iterate-bench`` writes.

Install the extra (``pip install 'pytest-iterate[locust]'``) and subclass the user in a
locustfile (``examples/locustfile.py``)::

    from pytest_iterate.integrations.locust import IterateUser

    class Pipeline(IterateUser):
        pass

then run Locust as its users do, on one machine or on several::

    locust -f locustfile.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:8000
    locust -f locustfile.py --headless --master --expect-workers 2 -u 20 -r 20 -t 30s --host ...
    locust -f locustfile.py --worker --master-host 10.0.0.5       # on each worker machine

What happens in each Locust process that sends (the local one, or every worker):

* one target is opened as ``iterate-bench run`` opens it
  (:func:`~pytest_iterate.harness.targets.open_target`): the design pipeline with the
  cache off, its token guard and client, or with ``--iterate-raw`` one bare aiohttp POST
  per request; on an asyncio loop running in a greenlet of its own. Users (greenlets)
  hand it their requests and wait for the answer cooperatively; a request is measured by
  :func:`~pytest_iterate.harness.runner.measure`, as iterate-bench measures one.
* every request goes to Locust's statistics: type ``pipeline`` or ``raw`` named after the
  scenario (``--iterate-scenario``, default ``locust``), a failure with its error kind;
  the time to first token of a streamed answer as its own entry (type ``TTFT``), and
  each pipeline stage as one (type ``stage``, named after the stage). Locust's
  "Aggregated" row counts those entries too; the ``pipeline``/``raw`` row is the requests.
* the raw samples are kept: a worker sends them to the master with its periodic report
  (Locust's ``report_to_master``), and the rest when the master asks at the end (a custom
  message, answered before the worker stops). At the end of the test the master (or the
  local process) writes ``iterate-report.json``, ``.md``, ``.html``, ``benchmark.json`` and
  ``metrics.prom`` into ``--iterate-report-dir`` from every sample, with each worker's share,
  so ``iterate-bench compare`` and the gates read a Locust run like any other. A worker
  that does not answer within 15 s leaves the report marked incomplete.

Times: each process measures on its own monotonic clock and states it on the wall clock
(one offset, taken at its start), so a request's latency, TTFT and lag are exact, and the
samples of several machines line up as well as their clocks agree (NTP: milliseconds).
Locust users are a closed loop: a request is due when its user sends it, so the scheduling
lag is only the hand-over to the asyncio loop.

The endpoint: Locust's ``--host`` (or the user class's ``host``); a host without a path
means its ``/v1`` (``http://127.0.0.1:8000`` is ``http://127.0.0.1:8000/v1``). Without a
host, ``ITERATE_BASE_URL`` (or ``[tool.iterate]``), as iterate-bench reads it. Client
settings (``ITERATE_MODEL``, the API key variable, timeouts) come from the environment
as there; the client's concurrency limit and pool follow ``--users`` (1,000 on a worker,
which is sent users, not the option).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gevent
import locust
from gevent.event import AsyncResult, Event
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from pytest_iterate import __version__
from pytest_iterate.client.config import IterateConfig
from pytest_iterate.endpoint import EndpointSpec
from pytest_iterate.harness.limits import FILES_RESERVED, raise_open_files_limit
from pytest_iterate.harness.reports import ALL_FORMATS, write_reports
from pytest_iterate.harness.runner import measure
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.stats import summarize
from pytest_iterate.harness.summary import Distribution, Report, WorkerShare
from pytest_iterate.harness.targets import SendOptions, Target, open_target
from pytest_iterate.harness.workloads import API_KINDS, SyntheticSpec, Workload, choose_workload

__all__ = ["IterateRequestFailed", "IterateUser", "base_url_for"]

logger = logging.getLogger("pytest_iterate.locust")

FLUSH_TIMEOUT_S = 15.0
_STATE = "_pytest_iterate_state"  # the Environment's attribute holding this process's state
_FLUSH = "pytest_iterate_flush"  # master -> worker: send the samples you have left
_FINAL = "pytest_iterate_final"  # worker -> master: the last samples
_REPORT_KEY = "pytest_iterate"  # in a worker's periodic report


class IterateRequestFailed(Exception):
    """A failed request as Locust's statistics show it: the error kind (``RateLimited``, ...)."""


def base_url_for(host: str | None) -> str:
    """The endpoint's base URL from Locust's host: a host without a path means its ``/v1``;
    no host: ``ITERATE_BASE_URL`` (or ``[tool.iterate]``, or the default)."""
    if not host:
        return IterateConfig.load().base_url.rstrip("/")
    if urlsplit(host).path in ("", "/"):
        return host.rstrip("/") + "/v1"
    return host.rstrip("/")


# -- settings: Locust command-line options (a worker gets the master's) -----------------------
def _add_options(parser: Any, **_: Any) -> None:
    group = parser.add_argument_group("pytest-iterate (IterateUser)")
    group.add_argument("--iterate-raw", action="store_true", help="bare HTTP POSTs instead of the pipeline")
    group.add_argument(
        "--iterate-workload", default=None, metavar="FILE", help="prompt, chat or design JSONL"
    )
    group.add_argument(
        "--iterate-synthetic",
        default=None,
        metavar="SPEC",
        help="synthetic prompts, e.g. prompt_tokens=512,output_tokens=128",
    )
    group.add_argument(
        "--iterate-api", choices=API_KINDS, default="chat", help="chat (default) or completions"
    )
    group.add_argument("--iterate-stream", action="store_true", help="streamed answers: TTFT per request")
    group.add_argument("--iterate-max-tokens", type=int, default=None, help="max_tokens of every request")
    group.add_argument("--iterate-model", default=None, help="model named in requests (env ITERATE_MODEL)")
    group.add_argument(
        "--iterate-scenario", default="locust", help="scenario name in reports (default locust)"
    )
    group.add_argument("--iterate-report-dir", default="reports", help="where the master writes the reports")
    group.add_argument(
        "--iterate-formats",
        default=",".join(ALL_FORMATS),
        help=f"report formats (default {','.join(ALL_FORMATS)})",
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    raw: bool
    stream: bool
    workload: Workload
    scenario: str
    report_dir: Path
    formats: tuple[str, ...]
    model: str | None
    users: int

    @classmethod
    def from_options(cls, options: Any) -> _Settings:
        """Read and check the ``--iterate-*`` options; ``ValueError`` names a bad one."""

        def opt(name: str, default: Any = None) -> Any:
            return getattr(options, name, default) if options is not None else default

        formats = tuple(
            f.strip() for f in str(opt("iterate_formats", ",".join(ALL_FORMATS))).split(",") if f.strip()
        )
        bad = [f for f in formats if f not in ALL_FORMATS]
        if bad or not formats:
            raise ValueError(
                f"--iterate-formats {opt('iterate_formats')!r}: unknown format(s) {bad}; "
                f"valid: {','.join(ALL_FORMATS)}"
            )
        max_tokens = opt("iterate_max_tokens")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"--iterate-max-tokens {max_tokens!r}: give a whole number >= 1")
        synthetic = opt("iterate_synthetic")
        raw = bool(opt("iterate_raw", False))
        stream = bool(opt("iterate_stream", False))
        workload = choose_workload(
            path=opt("iterate_workload"),
            synthetic=SyntheticSpec.parse(synthetic) if synthetic else None,
            api=opt("iterate_api", "chat"),
            raw=raw,
            max_tokens=max_tokens,
            stream=stream,
        )
        return cls(
            raw=raw,
            stream=stream,
            workload=workload,
            scenario=str(opt("iterate_scenario", "locust") or "locust"),
            report_dir=Path(opt("iterate_report_dir", "reports") or "reports"),
            formats=formats,
            model=opt("iterate_model"),
            users=int(opt("num_users", 0) or 0),
        )

    def config_overrides(self) -> dict[str, Any]:
        """Client settings: no response cache, the model, a concurrency limit and pool for the users."""
        overrides: dict[str, Any] = {"cache_enabled": False}
        if self.model:
            overrides["model"] = self.model
        # unknown on a worker (the master sends it users, not --users) or before the web UI's
        # start: a limit no Locust process reaches, so the users alone decide the load
        users = self.users or 1000
        open_files = raise_open_files_limit()
        pool = users if open_files is None else max(1, min(users, open_files - FILES_RESERVED))
        overrides["max_concurrent_requests"] = users
        overrides["max_connections"] = pool
        return overrides


# -- one per sending process: the target on an asyncio loop in a greenlet ---------------------
class _TargetUnavailable(Exception):
    pass


class _Driver:
    """The target of this process, on an asyncio loop running in a greenlet of its own."""

    def __init__(self, settings: _Settings, base_url: str, first_item: int) -> None:
        self.settings, self.base_url, self.first_item = settings, base_url, first_item
        self.offset = time.time() - time.perf_counter()  # this process's clock on the wall clock
        self.info: dict[str, Any] = {}
        self._loop = asyncio.new_event_loop()
        self._ready: AsyncResult = AsyncResult()
        self._stop: asyncio.Event | None = None
        self._target: Target | None = None
        self._items: Iterator[Any] = iter(())
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    @property
    def peak(self) -> int | None:
        return None if self._target is None else self._target.gauge.peak

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except Exception as exc:
            if self._ready.ready():
                logger.warning("pytest-iterate: closing the target: %s: %s", type(exc).__name__, exc)
            else:
                logger.error(
                    "pytest-iterate: the target could not be opened: %s: %s", type(exc).__name__, exc
                )
                self._ready.set_exception(exc)
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with open_target(
            EndpointSpec(self.base_url),
            self.settings.workload,
            config_overrides=self.settings.config_overrides(),
            options=SendOptions(raw=self.settings.raw, stream=self.settings.stream),
        ) as target:
            self._target, self.info = target, dict(target.info)
            start = self.first_item % len(target.items)
            self._items = itertools.islice(itertools.cycle(target.items), start, None)
            self._ready.set(target)
            await self._stop.wait()
            current = asyncio.current_task()
            left = [t for t in asyncio.all_tasks() if t is not current]
            for t in left:  # requests still on the wire when the test stopped: not measured
                t.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    def send(self) -> RequestSample:
        """Send the next item; blocks this greenlet (only) until it is answered."""
        try:
            target: Target = self._ready.get()
        except Exception as exc:
            raise _TargetUnavailable(str(exc)) from exc
        item = next(self._items)
        scheduled = time.perf_counter()
        future = asyncio.run_coroutine_threadsafe(measure(target.send, item, scheduled), self._loop)
        done: AsyncResult = AsyncResult()
        future.add_done_callback(done.set)
        sample: RequestSample = done.get().result()
        return sample.shifted(self.offset)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._greenlet is not None:
            self._greenlet.join(timeout=timeout_s)


# -- what a process keeps: its samples; the master's: everyone's ------------------------------
@dataclass
class _Gathered:
    samples: dict[str, list[RequestSample]] = field(default_factory=dict)  # source -> samples
    peaks: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, source: str, payload: Mapping[str, Any]) -> None:
        rows = payload.get("samples") or []
        self.samples.setdefault(source, []).extend(RequestSample.from_row(r) for r in rows)
        if payload.get("peak") is not None:
            self.peaks[source] = max(self.peaks.get(source, 0), int(payload["peak"]))
        if payload.get("info") and not self.info:
            self.info = dict(payload["info"])


@dataclass
class _State:
    """This process's part in a run (kept on the Locust Environment)."""

    settings: _Settings | None = None
    driver: _Driver | None = None
    kept: list[RequestSample] = field(default_factory=list)  # a sending process's unsent samples
    recording: bool = False
    info_sent: bool = False
    gathered: _Gathered = field(default_factory=_Gathered)  # the master's or the local process's
    waiting: set[str] = field(default_factory=set)
    flushed: Event = field(default_factory=Event)

    def drain(self) -> dict[str, Any]:
        """What a worker sends now: its samples since the last report, its target, its peak."""
        rows = [s.to_row() for s in self.kept]
        self.kept = []
        payload: dict[str, Any] = {"samples": rows}
        if self.driver is not None:
            payload["peak"] = self.driver.peak
            if not self.info_sent and self.driver.info:
                payload["info"], self.info_sent = self.driver.info, True
        return payload


def _listen(hook: Any, handler: Callable[..., None]) -> None:
    """Add ``handler`` to one of Locust's event hooks."""
    hook.add_listener(handler)


def _worker_index(runner: Any, client_id: str) -> int:
    """The master's number for a worker (from 0, in the order they connected)."""
    return int(runner.get_worker_index(client_id))


def _state(environment: Environment) -> _State | None:
    state = getattr(environment, _STATE, None)
    return state if isinstance(state, _State) else None


# -- the user ---------------------------------------------------------------------------------
class IterateUser(User):
    """A Locust user sending the workload through this process's target, one request per task
    run, each reported to Locust's statistics and kept for the reports (see the module doc).
    Subclass it in a locustfile; set ``wait_time`` to pace it (default: back to back)."""

    abstract = True

    @task
    def send(self) -> None:
        state = _state(self.environment)
        if state is None or state.driver is None or state.settings is None:
            raise StopUser()
        try:
            sample = state.driver.send()
        except _TargetUnavailable:  # said once, where it failed
            raise StopUser() from None
        settings = state.settings
        fire = self.environment.events.request.fire
        fire(
            request_type="raw" if settings.raw else "pipeline",
            name=settings.scenario,
            response_time=sample.latency_s * 1000.0,
            response_length=0,
            exception=None if sample.ok else IterateRequestFailed(sample.error_kind or "error"),
            context={},
        )
        if sample.ok and settings.stream and sample.ttft_s is not None:
            fire(
                request_type="TTFT",
                name=settings.scenario,
                response_time=sample.ttft_s * 1000.0,
                response_length=0,
                exception=None,
                context={},
            )
        for stage, seconds in sample.stages.items():
            fire(
                request_type="stage",
                name=stage,
                response_time=seconds * 1000.0,
                response_length=0,
                exception=None,
                context={},
            )
        if state.recording:
            state.kept.append(sample)


def _uses_iterate(environment: Environment) -> bool:
    return any(isinstance(u, type) and issubclass(u, IterateUser) for u in environment.user_classes or ())


# -- the run: Locust's events -----------------------------------------------------------------
def _on_init(environment: Environment, **_: Any) -> None:
    if not _uses_iterate(environment):
        return
    state = _State()
    setattr(environment, _STATE, state)
    runner = environment.runner
    if not isinstance(runner, WorkerRunner):  # a worker gets its options from the master at the start
        try:
            state.settings = _Settings.from_options(environment.parsed_options)
        except ValueError as exc:
            logger.error("pytest-iterate: %s", exc)
            sys.exit(2)
    if isinstance(runner, MasterRunner):
        runner.register_message(_FINAL, functools.partial(_on_final, state=state))
        _listen(environment.events.worker_report, functools.partial(_on_worker_report, state=state))
    elif isinstance(runner, WorkerRunner):
        runner.register_message(_FLUSH, functools.partial(_on_flush, state=state))
        _listen(environment.events.report_to_master, functools.partial(_on_report_to_master, state=state))


def _on_test_start(environment: Environment, **_: Any) -> None:
    state = _state(environment)
    if state is None:
        return
    state.gathered, state.kept, state.info_sent = _Gathered(), [], False
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        return
    try:
        state.settings = _Settings.from_options(environment.parsed_options)
    except ValueError as exc:
        logger.error("pytest-iterate: %s", exc)
        environment.process_exit_code = 2
        if runner is not None:
            gevent.spawn(runner.quit)
        return
    index = getattr(runner, "worker_index", 0) or 0
    state.driver = _Driver(state.settings, base_url_for(environment.host), first_item=index)
    state.recording = True
    state.driver.start()


def _on_test_stop(environment: Environment, **_: Any) -> None:
    state = _state(environment)
    if state is None:
        return
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        _gather_and_write(environment, runner, state)
        return
    state.recording = False
    if state.driver is not None:
        state.driver.stop()
    if not isinstance(runner, WorkerRunner):  # local: this process sent everything
        state.gathered.add("local", state.drain())
        _write(environment, state, incomplete="")


def _on_report_to_master(client_id: str, data: dict[str, Any], *, state: _State, **_: Any) -> None:
    if state.kept or (not state.info_sent and state.driver is not None and state.driver.info):
        data[_REPORT_KEY] = state.drain()


def _on_flush(environment: Environment, msg: Any, *, state: _State, **_: Any) -> None:
    state.recording = False  # the test is over: what comes after is not measured
    runner = environment.runner
    if runner is not None:
        runner.send_message(_FINAL, state.drain())


def _on_worker_report(client_id: str, data: dict[str, Any], *, state: _State, **_: Any) -> None:
    payload = data.get(_REPORT_KEY)
    if payload:
        state.gathered.add(client_id, payload)


def _on_final(environment: Environment, msg: Any, *, state: _State, **_: Any) -> None:
    state.gathered.add(msg.node_id, msg.data or {})
    state.waiting.discard(msg.node_id)
    if not state.waiting:
        state.flushed.set()


def _gather_and_write(environment: Environment, runner: MasterRunner, state: _State) -> None:
    """Ask every worker for its last samples, wait for them, write the reports."""
    state.waiting = {client.id for client in runner.clients.all}
    state.flushed.clear()
    for client_id in sorted(state.waiting):
        runner.send_message(_FLUSH, None, client_id=client_id)
    if state.waiting:
        state.flushed.wait(timeout=FLUSH_TIMEOUT_S)
    missing = sorted(state.waiting)
    incomplete = (
        f"worker(s) {', '.join(missing)} sent no final samples within {FLUSH_TIMEOUT_S:g} s"
        if missing
        else ""
    )
    _write(environment, state, incomplete=incomplete, runner=runner)


def _write(
    environment: Environment, state: _State, *, incomplete: str, runner: MasterRunner | None = None
) -> None:
    settings = state.settings
    if settings is None:
        return
    gathered = state.gathered
    samples = sorted((s for part in gathered.samples.values() for s in part), key=lambda s: s.scheduled_s)
    wall = max(s.end_s for s in samples) - min(s.scheduled_s for s in samples) if samples else 0.0
    shares: list[WorkerShare] = []
    if runner is not None:
        for source in sorted(gathered.samples, key=lambda source: _worker_index(runner, source)):
            mine = gathered.samples[source]
            shares.append(
                WorkerShare(
                    worker=_worker_index(runner, source) + 1,
                    requests=len(mine),
                    errors=sum(not s.ok for s in mine),
                    scheduling_lag_s=Distribution.of(s.lag_s for s in mine),
                    max_inflight=gathered.peaks.get(source),
                    label=source,
                )
            )
    users = settings.users or None
    peaks = list(gathered.peaks.values())
    summary = summarize(
        settings.scenario, samples, wall, load=f"locust:{users} users" if users else "locust"
    ).replace(
        concurrency=users,
        max_inflight=sum(peaks) if peaks else None,
        workers=tuple(shares),
    )
    run: dict[str, Any] = {
        "tool": "locust",
        "locust_version": locust.__version__,
        "version": __version__,
        **gathered.info,
        "users": users,
        "locust_mode": "master" if runner is not None else "local",
    }
    run["workers"] = len(gathered.samples) if runner is not None else 1
    report = Report.build(run, (), [summary])
    if incomplete:
        report = report.replace(complete=False, incomplete_reason=incomplete)
        logger.error("pytest-iterate: the report is incomplete: %s", incomplete)
    paths = write_reports(
        report, settings.report_dir, formats=settings.formats, samples={summary.name: samples}
    )
    logger.info(
        "pytest-iterate: %d requests (%d errors) from %s; reports: %s",
        summary.requests,
        summary.errors,
        f"{len(shares)} workers" if runner is not None else "this process",
        ", ".join(str(p) for p in paths),
    )


# Locust's hooks are global (one Environment per Locust process): importing this module, as a
# locustfile does, is what plugs it in; every handler does nothing unless an IterateUser runs
_listen(events.init_command_line_parser, _add_options)
_listen(events.init, _on_init)
_listen(events.test_start, _on_test_start)
_listen(events.test_stop, _on_test_stop)
