"""Capped exponential backoff with full jitter, and interruptible sleeps."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from kernel.backoff import Backoff, sleep_or_stop


class Extreme(random.Random):
    """uniform() at one end of its range, to read the ceiling exactly."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b if self.high else a


def test_ceiling_doubles_up_to_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0, rng=Extreme(high=True))
    delays = [backoff.next_delay() for _ in range(7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert backoff.attempt == 7


def test_full_jitter_starts_at_zero() -> None:
    rng = Extreme(high=False)
    backoff = Backoff(base=0.1, cap=1.0, rng=rng)
    assert [backoff.next_delay() for _ in range(3)] == [0, 0, 0]
    assert [low for low, _ in rng.ranges] == [0, 0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_delays_stay_within_bounds_and_vary(seed: int) -> None:
    backoff = Backoff(base=0.05, cap=2.0, rng=random.Random(seed))
    for attempt in range(12):
        ceiling = min(2.0, 0.05 * 2**attempt)
        backoff.attempt = attempt
        samples = []
        for _ in range(50):
            backoff.attempt = attempt
            samples.append(backoff.next_delay())
        assert all(0 <= s <= ceiling for s in samples)
        assert len(set(samples)) > 1  # jittered, not fixed
        assert max(samples) > ceiling / 2  # and spread over the whole range


def test_reset_starts_over() -> None:
    backoff = Backoff(base=0.1, cap=10.0, rng=Extreme(high=True))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == pytest.approx(0.1)


def test_huge_attempt_count_does_not_overflow() -> None:
    backoff = Backoff(base=0.1, cap=3.0, rng=Extreme(high=True))
    backoff.attempt = 10_000
    assert backoff.next_delay() == pytest.approx(3.0)


async def test_sleep_waits_about_the_delay() -> None:
    backoff = Backoff(base=0.02, cap=0.02, rng=Extreme(high=True))
    started = time.monotonic()
    await backoff.sleep()
    assert 0.015 <= time.monotonic() - started < 1.0
    assert backoff.attempt == 1


async def test_sleep_or_stop_already_stopped_returns_true_at_once() -> None:
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    assert await sleep_or_stop(60.0, stop) is True
    assert time.monotonic() - started < 0.5


async def test_sleep_or_stop_stopped_early_returns_true() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    started = time.monotonic()
    assert await sleep_or_stop(60.0, stop) is True
    assert time.monotonic() - started < 1.0


async def test_sleep_or_stop_timeout_returns_false() -> None:
    stop = asyncio.Event()
    started = time.monotonic()
    assert await sleep_or_stop(0.02, stop) is False
    assert time.monotonic() - started >= 0.015
    assert not stop.is_set()


async def test_sleep_or_stop_zero_delay() -> None:
    assert await sleep_or_stop(0, asyncio.Event()) is False
