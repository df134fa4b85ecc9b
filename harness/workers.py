"""Load from several processes on this machine: ``iterate-bench run --workers N``.

One process drives about 2,000 requests/s open loop in raw mode (one core); N worker
processes share the sends. The parent plans each step, the workers send, and the parent
merges what they measured:

* open loop (``rate:R``, ``poisson:R``): the parent makes the step's one schedule (seeded,
  cut where the step stops, exactly as one process would send it) and deals it
  round-robin: worker w (from 0) sends requests w, w + N, w + 2N, ... at their scheduled
  offsets, with the items one process would have sent for them. The merged arrivals are
  the requested process, not N copies of a slower one.
* closed loop (``closed:C``): worker w runs ``C // N`` users and the first ``C % N``
  workers one more (C=10 on 4 workers: 3, 3, 2, 2); ``--requests`` and ``--warmup`` are
  split the same way. More workers than users is refused: a worker would have nothing to do.

Every worker opens its own target (pipeline or raw session) on the same base URL, waits
for the parent's go, starts at one shared wall-clock instant and sends back its raw
samples with times counted from that instant. The parent merges the samples (all of
them: percentiles over the merged samples, never an average of per-worker percentiles)
into one :class:`~pytest_iterate.harness.runner.RunResult`, with one
:class:`~pytest_iterate.harness.summary.WorkerShare` per worker (its lag, its peak in
flight).

A worker that dies or fails stops the run: the other workers are terminated and
:class:`WorkerError` names the worker (a bad setting a worker met, e.g. a missing API
key, is a ``ValueError`` naming it). A worker whose parent dies exits at once, so none is
left behind.

    async with WorkerPool(WorkerSetup(url, workload), 2) as pool:
        result, shares = await pool.run(ConstantRate(1000), duration_s=8)
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from pytest_iterate.endpoint import EndpointSpec
from pytest_iterate.harness.loads import (
    ClosedLoop,
    ConstantRate,
    LoadShape,
    Poisson,
    Schedule,
    bounded_offsets,
)
from pytest_iterate.harness.runner import RunResult, run_load
from pytest_iterate.harness.samples import RequestSample
from pytest_iterate.harness.summary import Distribution, WorkerShare
from pytest_iterate.harness.targets import SendOptions, Target, open_target
from pytest_iterate.harness.workloads import Workload

__all__ = [
    "StepPlan",
    "WorkerError",
    "WorkerPool",
    "WorkerResult",
    "WorkerSetup",
    "WorkerStep",
    "items_for",
    "merge_results",
    "merge_samples",
    "per_worker_shape",
    "plan_step",
    "split_count",
    "split_schedule",
    "worker_share",
]

Info = dict[str, Any]
T = TypeVar("T")


class WorkerError(RuntimeError):
    """A worker process died or failed; the message names it and what it was doing."""


# -- the plan: pure functions -----------------------------------------------------------------
def split_count(total: int, workers: int) -> list[int]:
    """``total`` in ``workers`` parts differing by at most one, the larger ones first.

    >>> split_count(10, 4)
    [3, 3, 2, 2]
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    base, extra = divmod(total, workers)
    return [base + (1 if w < extra else 0) for w in range(workers)]


def split_schedule(offsets: Sequence[float], workers: int) -> list[tuple[float, ...]]:
    """Deal ``offsets`` round-robin: worker w gets offsets w, w + N, w + 2N, ...

    >>> split_schedule([0.0, 0.1, 0.2, 0.3, 0.4], 2)
    [(0.0, 0.2, 0.4), (0.1, 0.3)]
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    return [tuple(offsets[w::workers]) for w in range(workers)]


@dataclass(frozen=True, slots=True)
class WorkerStep:
    """One worker's part of a step; it crosses to the worker process (picklable).

    The worker sends items ``items[(item_start + j * item_stride) % len(items)]`` for
    j < ``item_count``, cycled by the runner."""

    shape: LoadShape
    requests: int | None
    duration_s: float | None
    warmup: int
    item_start: int = 0
    item_stride: int = 1
    item_count: int = 1


@dataclass(frozen=True, slots=True)
class StepPlan:
    """A step split across workers, and what the merge needs to compute its wall time:
    an open loop's measured part starts at ``measure_offset`` and lasts at least
    ``min_wall_s`` (its duration, when the duration ended the schedule)."""

    label: str
    parts: tuple[WorkerStep, ...]
    warmup: int
    open_loop: bool
    measure_offset: float = 0.0
    min_wall_s: float = 0.0


def plan_step(
    shape: LoadShape,
    workers: int,
    *,
    requests: int | None,
    duration_s: float | None,
    warmup: int,
    items: int,
) -> StepPlan:
    """Split one step of ``shape`` (as :func:`~pytest_iterate.harness.runner.run_load` would
    run it in one process) across ``workers`` processes; ``items`` is the workload's size.

    Raises ``ValueError`` naming the step when a worker would get no request to measure.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if items < 1:
        raise ValueError("a step needs at least one item to send")
    if requests is None and duration_s is None:
        requests = items  # as run_load: each item once
    if isinstance(shape, ClosedLoop):
        return _plan_closed(shape, workers, requests, duration_s, warmup, items)
    if not hasattr(shape, "offsets"):
        raise TypeError(f"unknown load shape {shape!r}")
    total = None if requests is None else requests + warmup
    offsets = list(bounded_offsets(shape.offsets(), total, duration_s, warmup))
    shares = split_schedule(offsets, workers)
    parts = []
    for w, share in enumerate(shares):
        first = len(range(w, warmup, workers))  # this worker's share of the warm-up: its first ones
        if len(share) - first < 1:
            raise ValueError(
                f"{shape.label}: its {len(offsets) - warmup} measured requests cannot be shared by "
                f"{workers} workers (each needs at least one); lower --workers or send more requests"
            )
        parts.append(
            WorkerStep(
                Schedule(share, shape.label),
                requests=len(share) - first,
                duration_s=None,
                warmup=first,
                item_start=w,
                item_stride=workers,
                item_count=len(share),
            )
        )
    cut = duration_s is not None and (total is None or len(offsets) < total)
    return StepPlan(
        shape.label,
        tuple(parts),
        warmup,
        open_loop=True,
        measure_offset=offsets[warmup],
        min_wall_s=duration_s if cut and duration_s is not None else 0.0,
    )


def _plan_closed(
    shape: ClosedLoop,
    workers: int,
    requests: int | None,
    duration_s: float | None,
    warmup: int,
    items: int,
) -> StepPlan:
    if workers > shape.concurrency:
        raise ValueError(
            f"--workers {workers} is more than the {shape.concurrency} concurrent users of "
            f"{shape.label}: each worker needs at least one; lower --workers or raise --concurrency"
        )
    users = split_count(shape.concurrency, workers)
    counts: list[int | None] = (
        list(split_count(requests, workers)) if requests is not None else [None] * workers
    )
    if any(c == 0 for c in counts):
        raise ValueError(
            f"{shape.label}: --requests {requests} cannot be shared by {workers} workers "
            "(each needs at least one); lower --workers or raise --requests"
        )
    warmups = split_count(warmup, workers)
    parts = tuple(
        WorkerStep(
            ClosedLoop(users[w]),
            requests=counts[w],
            duration_s=duration_s,
            warmup=warmups[w],
            item_start=(w * items) // workers,  # workers start apart in the workload
            item_stride=1,
            item_count=items,
        )
        for w in range(workers)
    )
    return StepPlan(shape.label, parts, warmup, open_loop=False)


def per_worker_shape(shape: LoadShape, workers: int) -> LoadShape:
    """What one of ``workers`` processes carries of ``shape`` at most (for its client limits):
    the larger share of a closed loop's users, an open loop's rate divided by the workers."""
    if isinstance(shape, ClosedLoop):
        return ClosedLoop(split_count(shape.concurrency, workers)[0] or 1)
    if isinstance(shape, Poisson):
        return Poisson(shape.rps / workers, seed=shape.seed)
    if isinstance(shape, ConstantRate):
        return ConstantRate(shape.rps / workers)
    return shape


# -- the merge: pure functions ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerResult:
    """What a worker sends back after a step: its measured samples (times in seconds from
    the step's shared start) and the most requests it had on the wire at once."""

    samples: list[RequestSample]
    max_inflight: int | None = None


def merge_samples(parts: Sequence[Sequence[RequestSample]]) -> list[RequestSample]:
    """Every worker's samples in one list, in scheduled order (they share one timeline)."""
    return sorted((s for part in parts for s in part), key=lambda s: s.scheduled_s)


def merge_results(plan: StepPlan, parts: Sequence[WorkerResult]) -> RunResult:
    """One run from the workers' results: every raw sample, and the wall time one process
    running the whole step would report (first measured scheduled send -> last end)."""
    samples = merge_samples([p.samples for p in parts])
    if not samples:
        return RunResult(shape=plan.label, samples=[], wall_s=plan.min_wall_s, warmup=plan.warmup)
    start = plan.measure_offset if plan.open_loop else min(s.scheduled_s for s in samples)
    end = max(s.end_s for s in samples)
    wall = max(0.0, end - start, plan.min_wall_s)
    return RunResult(shape=plan.label, samples=samples, wall_s=wall, warmup=plan.warmup)


def worker_share(worker: int, result: WorkerResult) -> WorkerShare:
    """The report's line for worker ``worker`` (counted from 1)."""
    return WorkerShare(
        worker=worker,
        requests=len(result.samples),
        errors=sum(not s.ok for s in result.samples),
        scheduling_lag_s=Distribution.of(s.lag_s for s in result.samples),
        max_inflight=result.max_inflight,
    )


# -- the worker process -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What every worker opens: the endpoint's base URL, the workload, client settings and
    how to send. Crosses to the worker processes; base URL and options stay out of reprs
    (they may carry credentials)."""

    base_url: str = field(repr=False)
    workload: Workload
    config_overrides: Mapping[str, Any] = field(default_factory=dict)
    options: SendOptions = field(default=SendOptions(), repr=False)


def _exit_with_parent() -> None:
    """Exit this worker as soon as its parent process is gone (killed, crashed)."""
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:  # pragma: no cover - not started by multiprocessing
        return

    def watch() -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_main(conn: Connection, setup: WorkerSetup) -> None:
    """A worker process: open the target, then run the steps the parent sends."""
    _exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    try:
        asyncio.run(_serve(conn, setup))
    except BaseException as exc:
        usage = isinstance(exc, (ValueError, OSError)) and not isinstance(exc, (EOFError, BrokenPipeError))
        with contextlib.suppress(Exception):
            conn.send(("error", usage, f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None


async def _serve(conn: Connection, setup: WorkerSetup) -> None:
    spec = EndpointSpec(setup.base_url)
    async with open_target(
        spec, setup.workload, config_overrides=setup.config_overrides, options=setup.options
    ) as target:
        conn.send(("ready", dict(target.info)))
        while True:
            message = await asyncio.to_thread(conn.recv)
            if message[0] != "step":
                return
            _, step, start_at = message
            conn.send(("done", await _run_step(target, step, start_at)))


def items_for(step: WorkerStep, items: Sequence[T]) -> list[T]:
    """The items a worker sends for ``step``, in its order (the runner cycles them).

    >>> items_for(WorkerStep(ClosedLoop(1), 3, None, 0, item_start=1, item_stride=2, item_count=3), "abc")
    ['b', 'a', 'c']
    """
    return [items[(step.item_start + j * step.item_stride) % len(items)] for j in range(step.item_count)]


async def _run_step(target: Target, step: WorkerStep, start_at_wall: float) -> WorkerResult:
    mine = items_for(step, target.items)
    # the parent's start instant on this process's clock (wall clocks agree across processes)
    t0 = time.perf_counter() + (start_at_wall - time.time())
    target.gauge.reset()
    result = await run_load(
        target.send,
        mine,
        step.shape,
        requests=step.requests,
        duration_s=step.duration_s,
        warmup=step.warmup,
        start_at=t0,
    )
    return WorkerResult([s.shifted(-t0) for s in result.samples], target.gauge.peak)


# -- the parent's side ------------------------------------------------------------------------
@dataclass(slots=True)
class _Worker:
    index: int  # from 0
    process: BaseProcess
    conn: Connection


class WorkerPool:
    """``workers`` processes (spawned, so nothing of the parent's state is shared), each
    with its own target on ``setup``'s endpoint; :meth:`run` runs one step on all of them.

    Use as ``async with``: on the way out the workers are stopped, and any left are
    terminated (a failure, Ctrl-C). ``info`` is the first worker's description of its
    target; ``pids`` the workers' process ids."""

    def __init__(
        self,
        setup: WorkerSetup,
        workers: int,
        *,
        start_delay_s: float = 0.5,
        ready_timeout_s: float = 120.0,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
        self.setup, self.size = setup, workers
        self.start_delay_s, self.ready_timeout_s = start_delay_s, ready_timeout_s
        self.info: Info = {}
        self._workers: list[_Worker] = []

    @property
    def pids(self) -> list[int]:
        return [w.process.pid or 0 for w in self._workers]

    async def __aenter__(self) -> WorkerPool:
        try:
            await self.start()
        except BaseException:
            self._terminate()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if exc[0] is None:
            await self.close()
        else:
            self._terminate()

    async def start(self) -> Info:
        """Start the workers and wait until each has opened its target."""
        ctx = multiprocessing.get_context("spawn")
        for i in range(self.size):
            parent_end, child_end = ctx.Pipe()
            process = ctx.Process(
                target=_worker_main,
                args=(child_end, self.setup),
                name=f"iterate-bench worker {i + 1}",
                daemon=True,
            )
            process.start()
            child_end.close()  # ours would keep the pipe open after the worker died: no EOF
            self._workers.append(_Worker(i, process, parent_end))
        replies = await self._all("ready", "starting", timeout_s=self.ready_timeout_s)
        self.info = dict(replies[0])
        return self.info

    async def run(
        self,
        shape: LoadShape,
        *,
        requests: int | None = None,
        duration_s: float | None = None,
        warmup: int = 0,
    ) -> tuple[RunResult, list[WorkerShare]]:
        """One step of ``shape`` on every worker: the merged run and each worker's share."""
        plan = plan_step(
            shape,
            self.size,
            requests=requests,
            duration_s=duration_s,
            warmup=warmup,
            items=len(self.setup.workload),
        )
        start_at = time.time() + self.start_delay_s
        for worker, part in zip(self._workers, plan.parts, strict=True):
            try:
                worker.conn.send(("step", part, start_at))
            except (OSError, EOFError):
                self._terminate()
                raise WorkerError(self._ended(worker, f"sending it {plan.label}")) from None
        results: list[WorkerResult] = await self._all("done", f"running {plan.label}")
        shares = [worker_share(w + 1, r) for w, r in enumerate(results)]
        return merge_results(plan, results), shares

    async def close(self) -> None:
        """Ask the workers to stop, wait for them, terminate any that do not."""
        for worker in self._workers:
            with contextlib.suppress(OSError, EOFError):
                worker.conn.send(("stop",))
        for worker in self._workers:
            await asyncio.to_thread(worker.process.join, 10.0)
        self._terminate()
        for worker in self._workers:
            worker.conn.close()

    # -- waiting for all, failing on the first ----------------------------------------------
    async def _all(self, kind: str, doing: str, *, timeout_s: float | None = None) -> list[Any]:
        tasks = [asyncio.ensure_future(self._expect(w, kind, doing)) for w in self._workers]
        try:
            done, pending = await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:  # cancelled (Ctrl-C): stop the workers so the waiting threads end
            self._terminate()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        failed = [t for t in tasks if t in done and t.exception() is not None]
        if failed or pending:
            late = [w for w, t in zip(self._workers, tasks, strict=True) if t in pending]
            self._terminate()
            await asyncio.gather(*tasks, return_exceptions=True)
            if failed:
                error = failed[0].exception()
                assert error is not None
                raise error
            names = ", ".join(f"worker {w.index + 1} (pid {w.process.pid})" for w in late)
            raise WorkerError(f"{names} did not answer within {timeout_s:g} s while {doing}")
        return [t.result() for t in tasks]

    async def _expect(self, worker: _Worker, kind: str, doing: str) -> Any:
        try:
            message = await asyncio.to_thread(worker.conn.recv)
        except (EOFError, OSError):
            raise WorkerError(self._ended(worker, doing)) from None
        if message[0] == "error":
            _, usage, text = message
            error = f"worker {worker.index + 1} of {self.size} failed while {doing}: {text}"
            raise ValueError(error) if usage else WorkerError(error)
        if message[0] != kind:  # pragma: no cover - a protocol bug
            raise WorkerError(f"worker {worker.index + 1} sent {message[0]!r} while {doing}")
        return message[1]

    def _ended(self, worker: _Worker, doing: str) -> str:
        worker.process.join(5.0)
        code = worker.process.exitcode
        if code is None:
            how = "closed its pipe"
        elif code < 0:
            how = f"was killed by {_signal_name(-code)}"
        else:
            how = f"exited with code {code}"
        return (
            f"worker {worker.index + 1} of {self.size} (pid {worker.process.pid}) {how} while {doing}; "
            "the run is stopped and the other workers with it"
        )

    def _terminate(self) -> None:
        """Terminate every worker still running (then kill what is left), close the pipes."""
        alive = [w for w in self._workers if w.process.is_alive()]
        for worker in alive:
            worker.process.terminate()
        for worker in alive:
            worker.process.join(5.0)
            if worker.process.is_alive():  # pragma: no cover - ignored SIGTERM
                worker.process.kill()
                worker.process.join(5.0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
