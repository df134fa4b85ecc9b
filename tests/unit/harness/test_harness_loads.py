"""Load shapes and their parser."""

from __future__ import annotations

import itertools

import pytest

from pytest_iterate.harness.loads import ClosedLoop, ConstantRate, Poisson, parse_load


def test_parse_load_accepts_the_three_shapes() -> None:
    assert parse_load("closed:10") == ClosedLoop(10)
    assert parse_load("rate:5") == ConstantRate(5.0)
    assert parse_load("poisson:5") == Poisson(5.0, 0)
    assert parse_load("poisson:5:42") == Poisson(5.0, 42)
    assert parse_load("closed:3").label == "closed:3"


@pytest.mark.parametrize("bad", ["closed", "closed:0", "rate:-1", "rate:x", "burst:5", "poisson:5:x", ""])
def test_parse_load_names_the_bad_value(bad: str) -> None:
    with pytest.raises(ValueError, match="bad load shape") as info:
        parse_load(bad)
    assert repr(bad) in str(info.value)


def test_constant_rate_offsets_are_evenly_spaced() -> None:
    offs = list(itertools.islice(ConstantRate(4).offsets(), 5))
    assert offs == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_poisson_is_seeded_and_has_the_mean_rate() -> None:
    a = list(itertools.islice(Poisson(50, seed=3).offsets(), 5001))
    b = list(itertools.islice(Poisson(50, seed=3).offsets(), 5001))
    assert a == b
    assert a != list(itertools.islice(Poisson(50, seed=4).offsets(), 5001))
    assert all(y > x for x, y in itertools.pairwise(a))
    assert 5000 / a[-1] == pytest.approx(50, rel=0.05)
