"""The exception tree of pytest-iterate.

Every error that crosses into user code is one of these; errors of the libraries
underneath (aiohttp, httpx, tenacity, diskcache, tiktoken) are mapped at the
boundary with ``raise Mapped(msg) from exc``. Messages name the endpoint and the
status, never an API key.

    IterateError
    ├── ConfigError                 a bad option, env variable or config key
    ├── WorkloadError               a malformed workload line (names file and line)
    ├── CassetteError               a malformed cassette line (names file and line)
    ├── CacheError                  a cache store that cannot be used at all
    ├── ContextOverflow             prompt + max_tokens do not fit the context window
    ├── Busy                        the throttle queue is full; carries retry_after_s
    └── TransportError              anything that went wrong talking to the endpoint
        ├── ConnectError            refused, reset, DNS
        ├── RequestTimeout          no answer within the per-request timeout
        ├── BadResponse             an answer that is not what the API promises
        │   └── StreamError         a stream cut before [DONE] or an error event in it
        └── HTTPStatusError         a non-2xx status
            ├── RateLimited         429
            ├── ServerError         5xx (500, 501, 502, 503, 529...)
            └── ClientError         other 4xx (400, 401, 403, 404, 408, 409...)

Which statuses are retried is not a matter of class: one table,
:data:`pytest_iterate.client.retry.RETRY_STATUSES`, says it (408, 409, 425, 429, 500,
502, 503, 504, 529); 501, 505 and every other status fail at once.
"""

from __future__ import annotations

__all__ = [
    "BadResponse",
    "Busy",
    "CacheError",
    "CassetteError",
    "ClientError",
    "ConfigError",
    "ConnectError",
    "ContextOverflow",
    "HTTPStatusError",
    "IterateError",
    "RateLimited",
    "RequestTimeout",
    "ServerError",
    "StreamError",
    "TransportError",
    "WorkloadError",
    "error_for_status",
]


class IterateError(Exception):
    """Root of every error raised by pytest-iterate."""


class ConfigError(IterateError, ValueError):
    """A configuration value is unknown or out of range; the message names it."""


class WorkloadError(IterateError, ValueError):
    """A workload file or line is malformed."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = f"{path}:{line}: " if path is not None and line is not None else ""
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class CassetteError(WorkloadError):
    """A cassette file or line is malformed."""


class CacheError(IterateError):
    """The response cache cannot be used (a folder that cannot be created, say)."""


class ContextOverflow(IterateError):
    """The request does not fit the model's context window and the policy is ``refuse``."""

    def __init__(
        self,
        message: str,
        *,
        prompt_tokens: int | None = None,
        max_tokens: int | None = None,
        context_window: int | None = None,
    ) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_window = context_window


class Busy(IterateError):
    """The pipeline is saturated: come back after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TransportError(IterateError):
    """Talking to the endpoint failed."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ConnectError(TransportError):
    """The connection was refused, reset or could not be made."""


class RequestTimeout(TransportError):
    """No (complete) answer within the per-request timeout."""


class BadResponse(TransportError):
    """The endpoint answered something that is not a valid API response.

    ``retryable`` is True for a garbled or cut answer (a body that is not JSON, a
    stream cut short) and False for a well-formed answer of the wrong shape (empty
    ``choices``, a missing field), which a retry would only repeat.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        body: bytes = b"",
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.body = body[:200]
        if retryable is not None:
            self.retryable = retryable


class StreamError(BadResponse):
    """A stream ended before ``[DONE]`` or carried an ``error`` event (retryable)."""

    retryable: bool = True


class HTTPStatusError(TransportError):
    """The endpoint answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int,
        body: bytes = b"",
        retry_after_s: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status = status
        self.body = body[:200]
        self.retry_after_s = retry_after_s
        self.code = code


class RateLimited(HTTPStatusError):
    """HTTP 429."""


class ServerError(HTTPStatusError):
    """HTTP 5xx (retried or not by :data:`~pytest_iterate.client.retry.RETRY_STATUSES`)."""


class ClientError(HTTPStatusError):
    """HTTP 4xx other than 429 (408, 409 and 425 are retried, the others never)."""


def error_for_status(
    status: int,
    *,
    url: str,
    body: bytes = b"",
    retry_after_s: float | None = None,
    code: str | None = None,
    detail: str | None = None,
) -> HTTPStatusError:
    """Build the right :class:`HTTPStatusError` subclass for ``status``."""
    cls: type[HTTPStatusError]
    if status == 429:
        cls = RateLimited
    elif status >= 500:
        cls = ServerError
    else:
        cls = ClientError
    text = f"{url} answered HTTP {status}"
    if detail:
        text += f": {detail}"
    return cls(text, url=url, status=status, body=body, retry_after_s=retry_after_s, code=code)
