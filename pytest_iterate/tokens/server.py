"""What an endpoint says about its tokens: its context window, and exact counts where it offers them.

One probe per endpoint (:func:`probe_server`), before its first guarded request,
asks the routes the common servers expose, all at once and with a short timeout:

================  =============================  =====================================
server            window                         exact count
================  =============================  =====================================
llama.cpp         ``GET /props``: ``n_ctx``       ``POST /tokenize {"content"}``
vLLM              ``GET /v1/models``:             ``POST /tokenize {"model", "prompt"}``
                  ``max_model_len``
TGI               ``GET /info``:                  ``POST /tokenize {"inputs"}``
                  ``max_total_tokens``
llama-cpp-python  (configure it, or learn it      ``POST /extras/tokenize/count
                  from its first 400)             {"input"}``
================  =============================  =====================================

A tokenize route is used only after it counted a check text with a positive
integer. Whatever fails (404, a timeout, a body of another shape, a cassette
that never recorded the probe) is remembered: the endpoint is counted with the
per-script estimate (:mod:`.bounds`) from then on, and nothing is asked again.

:class:`ServerTokens` counts through the route: texts are keyed by a digest of
their content (a bounded LRU), identical texts in flight share one call, the texts
of a request go out together (``count_many``), at most ``max_in_flight`` calls run
at once, and every exact count also teaches the per-script estimate. A chat prompt
is more than its contents: the chat template adds a fixed overhead per model and
message shape (roles in order), learned as ``usage.prompt_tokens`` minus the exact
counts of the contents (:meth:`ServerTokens.template`). A counting call that fails
makes that request fall back to the estimate; three failures in a row turn exact
counting off for the endpoint.

:class:`EndpointTokens` is the lazy handle a :class:`~.layer.GuardingCaller` holds:
``await tokens.ready()`` probes once (concurrent first requests share the probe)
and returns the :class:`ServerTokens`, or None when counting is off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pytest_iterate.client.errors import IterateError

if TYPE_CHECKING:
    from pytest_iterate.client.secret import Secret
    from pytest_iterate.client.transport.base import Transport
    from pytest_iterate.tokens.bounds import ScriptLearner
    from pytest_iterate.tokens.counter import TokenCounter

__all__ = [
    "COUNTING_MODES",
    "ROUTES",
    "EndpointTokens",
    "HTTPReply",
    "ServerHTTP",
    "ServerInfo",
    "ServerTokens",
    "TokenizeRoute",
    "TransportHTTP",
    "probe_server",
    "server_root",
]

COUNTING_MODES = ("auto", "estimate")
PROBE_TEXT = "Hello, world! 1234 中文 😀"
_FAILURES_TO_GIVE_UP = 3


@dataclass(frozen=True, slots=True)
class HTTPReply:
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


class ServerHTTP(Protocol):
    """Sends one request to the endpoint's server (not a completion) and reads the whole answer."""

    async def __call__(self, method: str, url: str, body: Any | None, *, timeout_s: float) -> HTTPReply: ...


class TransportHTTP:
    """:class:`ServerHTTP` over a client's :class:`Transport` (its own pool), with its API key.

    ``TransportHTTP.for_client(client)`` reuses an ``LLMClient``'s transport and its
    ``Authorization`` value, so the probe goes wherever the client's requests go (a
    cassette, a respx router, the wire) with the same credentials. ``auth`` is a
    :class:`~pytest_iterate.client.secret.Secret` handed to the transport, which adds it
    to the request at the last moment, as the client does.
    """

    def __init__(self, transport: Transport, *, auth: Secret | None = None) -> None:
        self._transport = transport
        self._auth = auth
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}

    def __repr__(self) -> str:
        return f"TransportHTTP({type(self._transport).__name__})"

    @classmethod
    def for_client(cls, client: Any) -> TransportHTTP | None:
        """The HTTP of an ``LLMClient`` (None for a caller without a transport)."""
        transport = getattr(client, "transport", None)
        if transport is None:
            return None
        return cls(transport, auth=getattr(client, "auth", None))

    async def __call__(self, method: str, url: str, body: Any | None, *, timeout_s: float) -> HTTPReply:
        async with asyncio.timeout(timeout_s):
            resp = await self._transport.send(
                method, url, headers=self._headers, json_body=body, timeout_s=timeout_s, auth=self._auth
            )
            try:
                data = await resp.read()
            finally:
                await resp.aclose()
        return HTTPReply(resp.status, data)


def server_root(base_url: str) -> str:
    """The server's root for routes outside the OpenAI API: ``base_url`` without a final ``/v1``.

    >>> server_root("http://127.0.0.1:8080/v1/"), server_root("http://host/llm/v1")
    ('http://127.0.0.1:8080', 'http://host/llm')
    """
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


# -- tokenize routes -------------------------------------------------------------------------
def _tokens_length(payload: Any) -> int | None:
    tokens = payload.get("tokens") if isinstance(payload, Mapping) else None
    return len(tokens) if isinstance(tokens, list) else None


def _count_field(payload: Any) -> int | None:
    count = payload.get("count") if isinstance(payload, Mapping) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def _list_length(payload: Any) -> int | None:
    return len(payload) if isinstance(payload, list) else None


@dataclass(frozen=True, slots=True)
class TokenizeRoute:
    """How one kind of server counts a text: the path, the body, where the count is."""

    kind: str
    path: str
    body: Callable[[str, str | None], dict[str, Any]]
    parse: Callable[[Any], int | None]

    def request(self, root: str, text: str, model: str | None) -> tuple[str, dict[str, Any]]:
        return root + self.path, self.body(text, model)


ROUTES: Mapping[str, TokenizeRoute] = {
    "llama.cpp": TokenizeRoute(
        "llama.cpp", "/tokenize", lambda text, _m: {"content": text, "add_special": False}, _tokens_length
    ),
    "vllm": TokenizeRoute(
        "vllm",
        "/tokenize",
        lambda text, m: {"model": m, "prompt": text, "add_special_tokens": False},
        lambda p: _count_field(p) if _count_field(p) is not None else _tokens_length(p),
    ),
    "tgi": TokenizeRoute("tgi", "/tokenize", lambda text, _m: {"inputs": text}, _list_length),
    "llama-cpp-python": TokenizeRoute(
        "llama-cpp-python",
        "/extras/tokenize/count",
        lambda text, m: {"input": text, **({"model": m} if m else {})},
        _count_field,
    ),
}


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What one probe found: the server kind, its window, and its tokenize route (None: none)."""

    kind: str | None = None
    window: int | None = None
    window_source: str | None = None
    prompt_limit: int | None = None  # TGI's max_input_tokens
    route: TokenizeRoute | None = None
    probe_s: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        return self.route is not None

    def describe(self) -> str:
        parts = [f"server {self.kind or 'unknown'}"]
        parts.append(f"window {self.window} from {self.window_source}" if self.window else "no window stated")
        parts.append(f"exact counts via {self.route.path}" if self.route else "per-script estimates")
        return ", ".join(parts)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _props_window(payload: Any) -> int | None:
    if not isinstance(payload, Mapping):
        return None
    settings = payload.get("default_generation_settings")
    if isinstance(settings, Mapping) and _positive_int(settings.get("n_ctx")):
        return _positive_int(settings.get("n_ctx"))
    return _positive_int(payload.get("n_ctx"))


def _models_window(payload: Any, model: str | None) -> int | None:
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, list):
        return None
    windows = {
        str(item.get("id")): _positive_int(item.get("max_model_len"))
        for item in data
        if isinstance(item, Mapping) and _positive_int(item.get("max_model_len"))
    }
    if not windows:
        return None
    if model in windows:
        return windows[model]
    return next(iter(windows.values())) if len(windows) == 1 else min(w for w in windows.values() if w)


def _info_windows(payload: Any) -> tuple[int | None, int | None]:
    if not isinstance(payload, Mapping):
        return None, None
    total = _positive_int(payload.get("max_total_tokens"))
    prompt = _positive_int(payload.get("max_input_tokens")) or _positive_int(payload.get("max_input_length"))
    return total, prompt


async def _ask(
    http: ServerHTTP, method: str, url: str, body: Any | None, timeout_s: float
) -> HTTPReply | None:
    try:
        return await http(method, url, body, timeout_s=timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception:  # any failure (connection, timeout, a test double's refusal) means "not here"
        return None


async def probe_server(
    http: ServerHTTP,
    base_url: str,
    model: str | None,
    *,
    timeout_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> ServerInfo:
    """Ask the endpoint for its window and a tokenize route (module doc); never raises."""
    start = clock()
    root = server_root(base_url)
    props, models, info = await asyncio.gather(
        _ask(http, "GET", root + "/props", None, timeout_s),
        _ask(http, "GET", base_url.rstrip("/") + "/models", None, timeout_s),
        _ask(http, "GET", root + "/info", None, timeout_s),
    )
    kind: str | None = None
    window: int | None = None
    source: str | None = None
    prompt_limit: int | None = None
    if props is not None and props.status == 200 and (n_ctx := _props_window(props.json())):
        kind, window, source = "llama.cpp", n_ctx, "GET /props n_ctx"
    elif models is not None and models.status == 200 and (n := _models_window(models.json(), model)):
        kind, window, source = "vllm", n, "GET /v1/models max_model_len"
    elif info is not None and info.status == 200:
        total, prompt_limit = _info_windows(info.json())
        if total:
            kind, window, source = "tgi", total, "GET /info max_total_tokens"
    candidates = [kind] if kind is not None else ["llama-cpp-python"]
    notes: list[str] = []
    for name in candidates:
        route = ROUTES[name]
        url, body = route.request(root, PROBE_TEXT, model)
        reply = await _ask(http, "POST", url, body, timeout_s)
        count = route.parse(reply.json()) if reply is not None and reply.status == 200 else None
        if count is not None and count > 0:
            return ServerInfo(name, window, source, prompt_limit, route, clock() - start, tuple(notes))
        notes.append(f"{route.path}: {reply.status if reply is not None else 'no answer'}")
    return ServerInfo(kind, window, source, prompt_limit, None, clock() - start, tuple(notes))


# -- exact counting ----------------------------------------------------------------------------
def digest(text: str) -> bytes:
    """The cache key of a text (a digest: the cache never holds the texts themselves)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class CountError(IterateError):
    """An exact count could not be had; the request falls back to the estimate."""


@dataclass(slots=True)
class _Template:
    overhead: int
    seen: int = 1


@dataclass
class ServerTokens:
    """Exact counts of one endpoint through its tokenize route (module doc).

    ``learner`` (with ``endpoint_key`` and ``counter``) is taught every exact count,
    so the per-script estimate the guard cuts with matches this server.
    """

    http: ServerHTTP
    root: str
    info: ServerInfo
    model: str | None = None
    timeout_s: float = 10.0
    cache_size: int = 8192
    max_in_flight: int = 8
    learner: ScriptLearner | None = None
    counter: TokenCounter | None = None
    endpoint_key: str = "default"
    calls: int = 0
    hits: int = 0
    failures: int = 0
    _cache: OrderedDict[bytes, int] = field(default_factory=OrderedDict, repr=False)
    _flight: dict[bytes, asyncio.Future[int]] = field(default_factory=dict, repr=False)
    _templates: dict[tuple[str, tuple[str, ...]], _Template] = field(default_factory=dict, repr=False)
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)
    _failed_in_a_row: int = 0

    @property
    def active(self) -> bool:
        """False once counting failed too often (the endpoint is estimated from then on)."""
        return self.info.route is not None and self._failed_in_a_row < _FAILURES_TO_GIVE_UP

    # -- counts -----------------------------------------------------------------------
    def known(self, text: str) -> int | None:
        """The exact count of ``text`` if it was counted before (no call)."""
        key = digest(text)
        count = self._cache.get(key)
        if count is not None:
            self._cache.move_to_end(key)
        return count

    async def count(self, text: str) -> int:
        """The exact count of ``text`` (cached by digest; identical texts in flight share a call)."""
        key = digest(text)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return cached
        flight = self._flight.get(key)
        if flight is not None:
            self.hits += 1
            return await asyncio.shield(flight)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._flight[key] = future
        try:
            count = await self._call(text)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else CountError("cancelled"))
                future.exception()  # retrieved: a follower that left early leaves no warning
            raise
        else:
            future.set_result(count)
            self._store(key, count)
            return count
        finally:
            self._flight.pop(key, None)

    async def count_many(self, texts: Iterable[str]) -> dict[str, int]:
        """Exact counts of several texts at once; raises :class:`CountError` if one fails."""
        unique = list(dict.fromkeys(texts))
        missing = [t for t in unique if self.known(t) is None]
        if missing:
            results = await asyncio.gather(*(self.count(t) for t in missing), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                if any(isinstance(e, asyncio.CancelledError) for e in errors):
                    raise asyncio.CancelledError
                raise CountError(f"{len(errors)} of {len(missing)} texts could not be counted: {errors[0]}")
        out: dict[str, int] = {}
        for text in unique:
            known = self.known(text)
            if known is None:  # evicted by a concurrent burst: count again
                known = await self.count(text)
            out[text] = known
        return out

    def _store(self, key: bytes, count: int) -> None:
        self._cache[key] = count
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def _call(self, text: str) -> int:
        route = self.info.route
        if route is None or not self.active:
            raise CountError(f"{self.root}: exact counting is off")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        url, body = route.request(self.root, text, self.model)
        async with self._slots:
            self.calls += 1
            reply = await _ask(self.http, "POST", url, body, self.timeout_s)
        count = route.parse(reply.json()) if reply is not None and reply.status == 200 else None
        if count is None:
            self.failures += 1
            self._failed_in_a_row += 1
            status = reply.status if reply is not None else "no answer"
            raise CountError(f"{url} did not count a {len(text)}-character text ({status})")
        self._failed_in_a_row = 0
        if self.learner is not None and self.counter is not None and count > 0 and text:
            self.learner.observe(self.endpoint_key, self.counter.profile_recent(text), count, self.model)
        return count

    # -- the chat template's overhead -------------------------------------------------------
    def template(self, model: str | None, roles: Sequence[str]) -> int | None:
        """The learned overhead (tokens besides the contents) of a prompt of ``roles`` for ``model``."""
        found = self._templates.get((model or "", tuple(roles)))
        return found.overhead if found is not None else None

    def learn_template(self, model: str | None, roles: Sequence[str], overhead: int) -> None:
        """A response reported ``overhead`` tokens besides the exact counts of the contents."""
        key = (model or "", tuple(roles))
        found = self._templates.get(key)
        if found is None:
            self._templates[key] = _Template(overhead)
        else:
            found.overhead = max(found.overhead, overhead)
            found.seen += 1


class EndpointTokens:
    """The lazy probe of one endpoint: :meth:`ready` probes once and remembers the outcome.

    ``mode`` is ``"auto"`` (probe; exact counts where the endpoint offers them) or
    ``"estimate"`` (never probe). ``http`` None means there is nothing to probe with.
    """

    def __init__(
        self,
        http: ServerHTTP | None,
        base_url: str,
        *,
        model: str | None = None,
        mode: str = "auto",
        probe_timeout_s: float = 2.0,
        count_timeout_s: float = 10.0,
        learner: ScriptLearner | None = None,
        counter: TokenCounter | None = None,
        endpoint_key: str | None = None,
    ) -> None:
        if mode not in COUNTING_MODES:
            raise ValueError(
                f"token counting mode {mode!r} is not valid; valid values: {', '.join(COUNTING_MODES)}"
            )
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.mode = mode
        self.probe_timeout_s = probe_timeout_s
        self.count_timeout_s = count_timeout_s
        self.learner = learner
        self.counter = counter
        self.endpoint_key = endpoint_key or self.base_url
        self.info: ServerInfo | None = None
        self.server: ServerTokens | None = None
        self.probes = 0
        self._probing: asyncio.Task[ServerInfo] | None = None

    def __repr__(self) -> str:
        state = self.info.describe() if self.info is not None else "not probed"
        return f"EndpointTokens({self.base_url!r}, mode={self.mode!r}: {state})"

    @property
    def probed(self) -> bool:
        return self.info is not None

    async def ready(self) -> ServerTokens | None:
        """The endpoint's exact counter after the one probe, or None (estimates only)."""
        if self.info is None:
            if self.mode == "estimate" or self.http is None:
                self.info = ServerInfo(notes=("not probed: token counting is 'estimate'",))
            else:
                if self._probing is None:
                    self.probes += 1
                    self._probing = asyncio.ensure_future(
                        probe_server(self.http, self.base_url, self.model, timeout_s=self.probe_timeout_s)
                    )
                info = await asyncio.shield(self._probing)
                if self.info is None:
                    self.info = info
                    if info.route is not None:
                        self.server = ServerTokens(
                            self.http,
                            server_root(self.base_url),
                            info,
                            model=self.model,
                            timeout_s=self.count_timeout_s,
                            learner=self.learner,
                            counter=self.counter,
                            endpoint_key=self.endpoint_key,
                        )
        server = self.server
        return server if server is not None and server.active else None
