"""kernel.rate.TokenBucket: a rate, a burst, a debt paid by waiting (time a parameter)."""

from __future__ import annotations

import pytest

from kernel.rate import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_starts_empty_and_paces_takers_in_turn() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock=clock)
    assert bucket.delay_for(10) == pytest.approx(1.0)
    assert bucket.delay_for(5) == pytest.approx(1.5)  # queued behind the first 10
    clock.now += 1.5
    assert bucket.delay_for(1) == pytest.approx(0.1)


def test_the_rate_holds_over_time() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, clock=clock)
    sent = 0
    for _ in range(50):
        clock.now += bucket.delay_for(20)
        sent += 20
    assert sent / (clock.now - 1000.0) == pytest.approx(100.0, rel=0.03)


def test_a_full_bucket_lets_its_burst_through_then_paces() -> None:
    """The alerts' bucket: full at first, one at a time, a burst of at least one even under
    one a second; a quiet spell refills it no further than the burst."""
    clock = Clock()
    bucket = TokenBucket(0.5, burst=1.0, initial=1.0, clock=clock)
    assert bucket.delay_for() == 0.0
    assert bucket.delay_for() == pytest.approx(2.0)
    clock.now += 3600
    assert [bucket.delay_for() for _ in range(2)] == [0.0, pytest.approx(2.0)]
    fast = TokenBucket(20.0, burst=20.0, initial=20.0, clock=clock)
    assert [fast.delay_for() for _ in range(21)][-2:] == [0.0, pytest.approx(0.05)]


def test_a_long_quiet_spell_refills_one_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock=clock)
    clock.now += 3600  # only one second's worth accumulates
    assert bucket.delay_for(10) == 0.0
    assert bucket.delay_for(10) == pytest.approx(1.0)


def test_a_partial_refill_is_used_then_owed() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, clock=clock)
    clock.now += 0.5  # 5 tokens
    assert bucket.delay_for(3) == 0.0
    assert bucket.delay_for(4) == pytest.approx(0.2)
