"""The worker-wide record budget: grants what is free, waits when nothing is."""

from __future__ import annotations

import asyncio

import pytest

from consumer.shard.budget import RecordBudget


async def test_grants_up_to_what_is_free() -> None:
    budget = RecordBudget(100)
    assert await budget.acquire(60) == 60
    assert await budget.acquire(60) == 40, "a partial grant rather than a wait"
    assert budget.in_use == 100
    budget.release(30)
    assert budget.in_use == 70
    assert await budget.acquire(10) == 10


async def test_waits_while_nothing_is_free_and_wakes_on_release() -> None:
    budget = RecordBudget(10)
    await budget.acquire(10)
    waiter = asyncio.ensure_future(budget.acquire(5))
    await asyncio.sleep(0.01)
    assert not waiter.done(), "nothing free: the reader waits (backpressure)"
    budget.release(3)
    assert await asyncio.wait_for(waiter, 1) == 3


async def test_several_waiters_are_served_one_release_at_a_time() -> None:
    budget = RecordBudget(4)
    await budget.acquire(4)
    waiters = [asyncio.ensure_future(budget.acquire(4)) for _ in range(3)]
    for served in range(1, 4):
        await asyncio.sleep(0.01)
        assert sum(w.done() for w in waiters) == served - 1
        budget.release(4)
        await asyncio.sleep(0.01)
        done = [w for w in waiters if w.done()]
        assert len(done) == served, "one release of 4 serves exactly one waiter of 4"
        assert all(w.result() == 4 for w in done)
        assert budget.in_use == 4


def test_release_never_exceeds_capacity_and_capacity_is_positive() -> None:
    budget = RecordBudget(5)
    budget.release(50)
    assert budget.in_use == 0
    with pytest.raises(ValueError, match="capacity"):
        RecordBudget(0)
