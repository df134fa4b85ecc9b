"""Secret, MaskedStr, redact_url and split_credentials: the key never shows, the value still works."""

from __future__ import annotations

import copy
import logging
import pickle
import reprlib

import pytest
from _pytest._io.saferepr import saferepr

from pytest_iterate.client.secret import MaskedStr, Secret, redact_url, split_credentials

KEY = "sk-live-0123456789"


def test_secret_shows_only_stars_everywhere_but_reveal() -> None:
    s = Secret(KEY)
    shown = [repr(s), str(s), f"{s}", f"{s!r}", "{}".format(s), "%s" % s, saferepr(s), reprlib.repr(s)]  # noqa: UP031, UP032
    shown += [repr([s]), repr({"k": s}), saferepr({"headers": {"Authorization": s}})]
    assert all(KEY not in text for text in shown), shown
    assert s.reveal() == KEY and bool(s) and not Secret("")


def test_secret_equality_is_by_value_and_never_with_a_plain_string() -> None:
    assert Secret(KEY) == Secret(KEY) and Secret(KEY) != Secret("other")
    assert Secret(KEY) != KEY and hash(Secret(KEY)) == hash(Secret(KEY))


def test_secret_is_not_pickled_and_copies_are_itself() -> None:
    s = Secret(KEY)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(s)
    assert copy.copy(s) is s and copy.deepcopy({"a": s})["a"] is s


def test_secret_rejects_a_non_string() -> None:
    with pytest.raises(TypeError, match="not bytes"):
        Secret(b"sk")  # type: ignore[arg-type]


def test_bearer_and_basic_header_values() -> None:
    assert Secret.bearer(Secret(KEY)).reveal() == f"Bearer {KEY}"
    assert Secret.basic("Aladdin", "open sesame").reveal() == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


def test_mask_replaces_the_value_and_the_token_of_a_header_value() -> None:
    bearer = Secret.bearer(Secret(KEY))
    assert bearer.mask(f"auth: Bearer {KEY}; echo {KEY}".encode()) == b"auth: ***; echo ***"
    assert Secret(KEY).mask(b"nothing here") == b"nothing here"
    assert Secret("").mask(b"abc") == b"abc"


def test_masked_str_is_the_real_string_to_code_and_masked_to_repr() -> None:
    value = Secret.bearer(Secret(KEY)).header_value()
    assert isinstance(value, MaskedStr) and value == f"Bearer {KEY}"
    assert str(value) == f"Bearer {KEY}" and value.encode() == f"Bearer {KEY}".encode()
    assert repr(value) == "'Bearer ***'" and KEY not in saferepr({"Authorization": value})
    assert repr(MaskedStr(KEY)) == "'***'"


def test_masked_str_stays_masked_in_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("headers %r", {"Authorization": MaskedStr(f"Bearer {KEY}")})
    assert KEY not in caplog.text and "Bearer ***" in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        (f"https://{KEY}@llm.example/v1", "https://***@llm.example/v1"),
        (f"https://bob:{KEY}@llm.example:8443/v1", "https://***@llm.example:8443/v1"),
        (f"http://u:{KEY}@[::1]:8000/v1", "http://***@[::1]:8000/v1"),
        (
            f"https://x.example/v1?api-key={KEY}&api-version=2024",
            "https://x.example/v1?api-key=***&api-version=2024",
        ),
        (f"https://x.example/v1?access_token={KEY}", "https://x.example/v1?access_token=***"),
        ("https://x.example/v1?model=m&n=1", "https://x.example/v1?model=m&n=1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_url_of_something_that_is_not_a_url() -> None:
    assert redact_url(f"http://[{KEY}@x/v1") == "http://***@x/v1"
    assert redact_url(f"bob:{KEY}@x/v1") == "***@x/v1"
    assert redact_url("http://x/v1/@me?q=a@b") == "http://x/v1/@me?q=a@b"


def test_split_credentials_moves_userinfo_into_a_basic_secret() -> None:
    clean, auth = split_credentials("https://bob:p%40ss@llm.example:8443/v1")
    assert clean == "https://llm.example:8443/v1"
    assert auth == Secret.basic("bob", "p@ss")
    assert split_credentials("http://127.0.0.1/v1") == ("http://127.0.0.1/v1", None)
    clean, auth = split_credentials(f"https://{KEY}@llm.example/v1")
    assert clean == "https://llm.example/v1" and auth == Secret.basic(KEY, "")
