"""A server that runs in the caller's event loop or in a thread of its own.

:class:`Serving` is the lifecycle the embedded mock (:class:`~pytest_iterate.doubles.mock.
server.MockServer`) and the pipeline service (:class:`~pytest_iterate.service.app.
PipelineService`) share. A subclass implements ``async start()`` (serve in the running
loop, fill in its port) and ``async _stop()``; it gets:

- ``async with server:`` and ``await server.stop()`` in the caller's loop;
- :meth:`Serving.start_in_thread`: a daemon thread with its own loop, returning once the
  server listens (a failure to start is raised in the calling thread), then
  ``server.stop()`` blocks until it is down (and is awaitable as well, so one ``await
  server.stop()`` works in both modes);
- :meth:`Serving.cpu_seconds`: the CPU time of that thread, so a measurement can leave the
  server's work out of the caller's.

:func:`until_stopped` is what every ``serve-*`` command waits on: SIGINT or SIGTERM;
:func:`serve_command` runs such a command (its argparse wiring: :func:`command_parsers`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Self

from aiohttp import web

from pytest_iterate.client.errors import ConfigError

__all__ = ["Serving", "command_parsers", "serve_command", "until_stopped"]


class _Done:
    """An awaitable that is already finished (``stop()`` in thread mode)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class Serving:
    """Run in the caller's loop or in a thread; see the module docstring."""

    thread_name = "iterate-server"
    #: seconds to wait for the thread's server to start, then to stop
    start_timeout_s = 30.0
    stop_timeout_s = 10.0

    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port, filled in once listening
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    async def start(self) -> Self:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError

    async def _listen(self, app: web.Application, *, shutdown_timeout: float) -> None:
        """Serve ``app`` on ``host:port`` in the running loop (``start()`` calls this)."""
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=shutdown_timeout
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner

    async def _close(self) -> None:
        """Stop listening (``_stop()`` calls this)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    def stop(self) -> Any:
        """Stop: awaitable in loop mode; blocking (and also awaitable) in thread mode."""
        if self._thread is None:
            return self._stop()
        loop, thread = self._loop, self._thread
        assert loop is not None
        asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=self.stop_timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=self.stop_timeout_s)
        self._thread = self._loop = None
        return _Done()

    def cpu_seconds(self) -> float | None:
        """CPU time the server's own thread has used (started with :meth:`start_in_thread`);
        None when it runs in the caller's loop, whose CPU it then shares."""
        thread = self._thread
        if thread is None or thread.ident is None:
            return None
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))

    def start_in_thread(self) -> Self:
        """Serve from a daemon thread with its own event loop; returns once listening."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout=self.start_timeout_s):
            raise TimeoutError(f"{type(self).__name__} did not start within {self.start_timeout_s:g} s")
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise failure[0]
        return self


async def until_stopped() -> None:
    """Return on SIGINT or SIGTERM (a command that serves until Ctrl-C waits on this)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread / Windows
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve_until_stopped(server: Serving) -> int:
    async with server:
        print(server.base_url, flush=True)
        await until_stopped()
    return 0


def serve_command(command: str, build: Callable[[], Serving], where: str) -> int:
    """Run a ``serve-*`` command: print the base URL of the server ``build()`` makes, serve until
    Ctrl-C or SIGTERM. Returns 0 once stopped, 2 for a bad option (one line naming it), 1 when
    it cannot listen on ``where``."""
    try:
        return asyncio.run(_serve_until_stopped(build()))
    except ConfigError as exc:
        print(f"{command}: {exc}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        print(f"{command}: cannot listen on {where}: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0


def command_parsers(
    command: str, module: str, help_text: str, doc: str | None, configure: Callable[[Any], Any], run: Any
) -> tuple[Callable[[Any], argparse.ArgumentParser], Callable[[], argparse.ArgumentParser]]:
    """The two ways a ``serve-*`` command is reached: ``add_parser(subparsers)`` (a sub-command of
    ``iterate-bench``) and ``build_parser()`` (``python -m module``); ``configure`` adds its options."""

    def add_parser(subparsers: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(
            command, help=help_text, description=doc.split("\n\n")[0] if doc else None
        )
        configure(p)
        p.set_defaults(func=run)
        return p

    def build_parser() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=f"python -m {module}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        configure(parser)
        return parser

    return add_parser, build_parser
