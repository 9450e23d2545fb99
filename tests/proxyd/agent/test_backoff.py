"""Capped exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyd.agent.backoff import Backoff


def test_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(base=1.0, cap=10.0, rng=random.Random(1))
    nominal = []
    for _ in range(8):
        nominal.append(b.nominal())
        b.next()
    assert nominal == [1, 2, 4, 8, 10, 10, 10, 10]
    b.reset()
    assert b.nominal() == 1.0


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=2**32))
def test_delay_is_jittered_within_half_to_full_nominal(failures: int, seed: int) -> None:
    b = Backoff(base=0.5, cap=60.0, rng=random.Random(seed))
    b.failures = failures
    nominal = b.nominal()
    delay = b.next()
    assert nominal / 2 <= delay <= nominal <= 60.0


def test_jitter_spreads_retries() -> None:
    delays = {round(Backoff(1.0, 60.0, random.Random(s)).next(), 6) for s in range(20)}
    assert len(delays) > 10


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (5, 1)])
def test_rejects_bad_bounds(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap)
