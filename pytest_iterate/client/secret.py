"""Credentials that never show: a masked value type, and URLs with their secrets redacted.

pytest prints the arguments and (with ``-l``) the locals of every frame of a failing
test's traceback, its chained exceptions included, and ``--junitxml`` keeps the same
text. So a credential must never sit in a frame as a plain ``str``:

* :class:`Secret` holds it; its ``repr`` and ``str`` are ``***``. Only
  :meth:`Secret.reveal` gives the value back, for the code that must use it.
* :class:`MaskedStr` is what a transport hands its HTTP library as the
  ``Authorization`` header value: a real ``str`` (the library sends it as is) whose
  ``repr`` is masked, so aiohttp's and httpx's own frames show ``'Bearer ***'``.
* :func:`redact_url` is how any layer shows or stores an endpoint URL: user
  information (``http://user:KEY@host``) and key-like query values become ``***``.
  :func:`split_credentials` takes such user information off a base URL, so the client
  sends Basic auth through the same masked path instead of a URL holding the password.

>>> key = Secret("sk-live-123")
>>> key, str(key), f"{key}", bool(key)
(Secret('***'), '***', '***', True)
>>> redact_url("https://bob:sk-live-123@llm.example/v1?api-key=sk-live-123&x=1")
'https://***@llm.example/v1?api-key=***&x=1'
"""

from __future__ import annotations

import base64
import hmac
import re
from typing import Any, NoReturn, final
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["MaskedStr", "Secret", "redact_url", "split_credentials"]

MASK = "***"
_SECRET_PARAM = re.compile(r"key|token|secret|passw|auth|sig|credential", re.IGNORECASE)
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#@]*@")  # [scheme://]userinfo@


class MaskedStr(str):
    """A ``str`` whose ``repr`` hides the value after its first word.

    ``MaskedStr("Bearer sk-1")`` is ``"Bearer sk-1"`` to everything that reads it as a
    string (equality, encoding, concatenation, ``str()``), and ``'Bearer ***'`` to
    ``repr`` and so to pytest, ``reprlib`` and the logging of containers holding it.

    >>> MaskedStr("Bearer sk-1")
    'Bearer ***'
    >>> MaskedStr("Bearer sk-1") == "Bearer sk-1", {"Authorization": MaskedStr("sk-1")}
    (True, {'Authorization': '***'})
    """

    __slots__ = ()

    def __repr__(self) -> str:
        scheme, sep, _ = self.partition(" ")
        return repr(f"{scheme} {MASK}" if sep else MASK)


@final
class Secret:
    """A credential: ``repr``, ``str`` and format give ``***``; :meth:`reveal` the value.

    Equality is by value (in constant time) with another Secret only. A Secret is not
    pickled or copied into a plain string by accident: ``f"Bearer {secret}"`` gives
    ``'Bearer ***'``, so a mistake sends a wrong header, never a leaked one.
    """

    __slots__ = ("_header", "_value")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a str, not {type(value).__name__}")
        self._value = value
        self._header: MaskedStr | None = None

    @classmethod
    def bearer(cls, key: Secret) -> Secret:
        """The ``Authorization`` value ``Bearer <key>``."""
        return cls("Bearer " + key._value)

    @classmethod
    def basic(cls, user: str, password: str) -> Secret:
        """The ``Authorization`` value ``Basic base64(user:password)`` (RFC 7617, UTF-8)."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return cls("Basic " + token)

    def reveal(self) -> str:
        """The value itself; keep it out of locals that outlive the line that uses it."""
        return self._value

    def header_value(self) -> MaskedStr:
        """The value as a :class:`MaskedStr` for an HTTP library's header mapping."""
        header = self._header
        if header is None:
            header = self._header = MaskedStr(self._value)
        return header

    def mask(self, data: bytes) -> bytes:
        """``data`` with every occurrence of the value (and, for ``Scheme token``, the token) as ``***``."""
        for part in self._parts():
            raw = part.encode()
            if raw in data:
                data = data.replace(raw, MASK.encode())
        return data

    def _parts(self) -> tuple[str, ...]:
        scheme, sep, token = self._value.partition(" ")
        if sep and token and scheme.lower() in ("bearer", "basic", "token"):
            return (self._value, token)
        return (self._value,) if self._value else ()

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret is not pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


def redact_url(url: str) -> str:
    """``url`` for showing or storing: user information and key-like query values as ``***``.

    Key-like query parameters are those whose name mentions key, token, secret,
    password, auth, sig or credential (``api-key``, ``access_token``, ``sig``...).
    Works on text that is not a valid URL too (a bad ``base_url`` in an error message).

    >>> redact_url("http://127.0.0.1:8000/v1")
    'http://127.0.0.1:8000/v1'
    >>> redact_url("http://user:pw@[::1]:8000/v1"), redact_url("user:pw@host/v1")
    ('http://***@[::1]:8000/v1', '***@host/v1')
    """
    if "@" not in url and "?" not in url:
        return url
    shown = _USERINFO.sub(lambda m: f"{m.group(1) or ''}{MASK}@", url, count=1)
    head, mark, rest = shown.partition("?")
    if mark:
        query, hash_mark, fragment = rest.partition("#")
        query = "&".join(_redact_param(p) for p in query.split("&"))
        shown = f"{head}?{query}{hash_mark}{fragment}"
    return shown


def _redact_param(param: str) -> str:
    name, sep, value = param.partition("=")
    if sep and value and _SECRET_PARAM.search(unquote(name)):
        return f"{name}={MASK}"
    return param


def split_credentials(url: str) -> tuple[str, Secret | None]:
    """``url`` without its user information, and that information as a Basic ``Authorization`` value.

    >>> clean, auth = split_credentials("http://bob:s%40cret@127.0.0.1:8000/v1")
    >>> clean, auth
    ('http://127.0.0.1:8000/v1', Secret('***'))
    >>> auth == Secret.basic("bob", "s@cret")
    True
    >>> split_credentials("http://127.0.0.1:8000/v1")
    ('http://127.0.0.1:8000/v1', None)
    """
    if "@" not in url:
        return url, None
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, Secret.basic(unquote(user), unquote(password))
