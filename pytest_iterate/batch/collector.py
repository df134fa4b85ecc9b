"""BatchCollector: requests that arrive within a short window go out together.

Each caller hands over one request and gets its own answer back::

    collector = BatchCollector(caller, batch_size=8, window_s=0.02)
    item = await collector.submit(request)      # item.response or item.error, item.calls, ...
    answer = item.result()                      # the response, or its own error raised

A request opens a group of requests it can share a call with (same model, system
message, ``max_tokens`` and sampling parameters); the group is sent through
:func:`~pytest_iterate.batch.call.batch_llm_call_results` when it holds ``batch_size``
requests or ``window_s`` after its first one arrived, whichever comes first. So a
lone request waits at most ``window_s``; under load, batches fill before the window
ends. The batch answers natively where the endpoint takes list prompts, packs for
chat otherwise, and sends an item alone when its part of a batch fails (see
:mod:`.call`): every item gets its own answer or its own error, never another's.

Only what can share a call is batched (:meth:`BatchCollector.batchable`): a chat
request of one user message, after at most one system message, with text content,
not streamed. Anything else should be sent as it is.

``BatchItem.calls`` is the number of calls counted for this item (a batch's call
counts for its first item, a fallback call for its own item), so the items' calls add
up to the calls made; ``strategy`` says what answered it (``native``, ``packed``,
``concurrent``: alone).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pytest_iterate.batch.call import STRATEGIES, EndpointCapabilities, Strategy, batch_llm_call_results
from pytest_iterate.client.errors import ConfigError
from pytest_iterate.client.types import Caller, LLMRequest, LLMResponse

__all__ = ["BatchCollector", "BatchItem", "BatchStats"]

_GroupKey = tuple[str | None, str | None, int | None, str]


@dataclass(slots=True)
class BatchItem:
    """One request's share of a batch: its own response or error, and what it cost."""

    response: LLMResponse | None
    error: BaseException | None
    calls: int  # calls counted for this item (see the module doc)
    strategy: str  # what answered it: "native", "packed" or "concurrent" (alone)
    batch_size: int  # requests sent together with it (itself included)

    def result(self) -> LLMResponse:
        """The response; raises the item's own error."""
        if self.response is None:
            raise self.error or RuntimeError("batch item left without an answer")
        return self.response


@dataclass(slots=True)
class BatchStats:
    """What the collector did: batches, the requests in them, the calls they took."""

    batches: int = 0
    requests: int = 0
    calls: int = 0
    largest: int = 0
    served: dict[str, int] = field(default_factory=dict)

    @property
    def calls_saved(self) -> int:
        return self.requests - self.calls


@dataclass(slots=True)
class _Group:
    system: str | None
    model: str | None
    max_tokens: int | None
    params: dict[str, Any]
    prompts: list[str] = field(default_factory=list)
    futures: list[asyncio.Future[BatchItem]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class BatchCollector:
    """Collects batchable requests for up to ``window_s`` or ``batch_size`` and sends them together.

    ``caller`` sends a request that carries one item; ``batch_caller`` (default:
    ``caller``) one that carries several. ``capabilities`` remembers per ``endpoint``
    whether native list prompts work (one probe).
    """

    def __init__(
        self,
        caller: Caller,
        *,
        batch_size: int,
        window_s: float = 0.02,
        batch_caller: Caller | None = None,
        strategy: Strategy = "auto",
        concurrency: int = 8,
        capabilities: EndpointCapabilities | None = None,
        endpoint: str = "default",
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1")
        if not window_s >= 0:
            raise ConfigError(f"window_s={window_s!r} must be a number of seconds >= 0")
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy={strategy!r} is not valid; valid values: {', '.join(STRATEGIES)}")
        self.caller = caller
        self.batch_caller = batch_caller or caller
        self.batch_size = batch_size
        self.window_s = window_s
        self.strategy = strategy
        self.concurrency = concurrency
        self.capabilities = capabilities if capabilities is not None else EndpointCapabilities()
        self.endpoint = endpoint
        self.stats = BatchStats()
        self._open: dict[_GroupKey, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def batchable(request: LLMRequest) -> bool:
        """Whether ``request`` can share a call: one user message of text (after at most one
        system message), chat, not streamed."""
        if request.endpoint != "chat" or request.stream or request.prompt is not None:
            return False
        messages = request.messages
        if not 1 <= len(messages) <= 2:
            return False
        *head, last = messages
        if set(last) != {"role", "content"} or last.get("role") != "user":
            return False
        if not isinstance(last.get("content"), str):
            return False
        return all(
            set(m) == {"role", "content"} and m.get("role") == "system" and isinstance(m.get("content"), str)
            for m in head
        )

    async def submit(self, request: LLMRequest) -> BatchItem:
        """Send ``request`` with the others that arrive within the window; its own outcome
        (an item's error is never another's). ``ConfigError`` for a request
        :meth:`batchable` refuses."""
        if not self.batchable(request):
            raise ConfigError("this request cannot be batched (see BatchCollector.batchable); send it alone")
        system = str(request.messages[0]["content"]) if len(request.messages) == 2 else None
        params = dict(request.params)
        key: _GroupKey = (
            request.model,
            system,
            request.max_tokens,
            json.dumps(params, sort_keys=True, default=str),
        )
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _Group(system, request.model, request.max_tokens, params)
            if self.batch_size > 1:
                loop = asyncio.get_running_loop()
                group.timer = loop.call_later(self.window_s, self._flush, key, group)
        future: asyncio.Future[BatchItem] = asyncio.get_running_loop().create_future()
        group.prompts.append(str(request.messages[-1]["content"]))
        group.futures.append(future)
        if len(group.prompts) >= self.batch_size:
            self._flush(key, group)
        return await future

    async def aclose(self) -> None:
        """Send what is still collected now and wait for every batch in flight."""
        for key, group in list(self._open.items()):
            self._flush(key, group)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals --------------------------------------------------------------------
    def _flush(self, key: _GroupKey, group: _Group) -> None:
        if self._open.get(key) is not group:
            return  # already sent (full before its window ended)
        del self._open[key]
        if group.timer is not None:
            group.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._send(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, group: _Group) -> None:
        futures = group.futures
        try:
            result = await batch_llm_call_results(
                group.prompts,
                self.caller,
                batch_caller=self.batch_caller,
                strategy=self.strategy,
                concurrency=self.concurrency,
                pack_size=self.batch_size,
                pack_max_chars=10**9,
                max_tokens=group.max_tokens,
                params=group.params,
                model=group.model,
                capabilities=self.capabilities,
                endpoint=self.endpoint,
                system=group.system,
            )
        except Exception as exc:  # a bug below: every item gets the error, none hangs
            for future in futures:
                if not future.done():
                    future.set_result(BatchItem(None, exc, 0, "concurrent", len(futures)))
            return
        except BaseException:  # cancelled: so are the items waiting for it
            for future in futures:
                future.cancel()
            raise
        size = len(group.prompts)
        stats = self.stats
        stats.batches += 1
        stats.requests += size
        stats.calls += result.calls_made
        stats.largest = max(stats.largest, size)
        for strategy, n in result.strategies.items():
            stats.served[strategy] = stats.served.get(strategy, 0) + n
        outcomes = zip(futures, result.responses, result.errors, result.calls, result.served_by, strict=True)
        for future, response, error, calls, served in outcomes:
            if future.done():
                continue  # its caller left
            if response is not None:  # duplicates share one response: each gets its own copy
                response = dataclasses.replace(response, warnings=list(response.warnings))
            future.set_result(BatchItem(response, error, calls, served or "concurrent", size))
