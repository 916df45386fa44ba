"""The worker-wide record budget: grants what is free, waits while less than its least grant is."""

from __future__ import annotations

import asyncio
import random

import pytest

from consumer.shard.budget import LEAST_GRANT_SHARE, RecordBudget


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


async def test_waiters_are_served_in_the_order_they_came() -> None:
    budget = RecordBudget(10)
    await budget.acquire(10)
    order: list[str] = []

    async def reader(name: str, wanted: int) -> int:
        granted = await budget.acquire(wanted)
        order.append(name)
        return granted

    tasks = [asyncio.ensure_future(reader(name, 8)) for name in "abc"]
    await asyncio.sleep(0)
    assert budget.waiting == 3
    budget.release(5)  # part of what the first wants: it takes it, the others wait on
    await asyncio.sleep(0)
    assert order == ["a"] and tasks[0].result() == 5 and budget.waiting == 2
    budget.release(10)  # 8 to the second, the 2 left to the third
    await asyncio.sleep(0)
    assert order == ["a", "b", "c"]
    assert [t.result() for t in tasks] == [5, 8, 2]
    assert budget.in_use == 10 and budget.waiting == 0


async def test_a_newcomer_queues_behind_the_waiters() -> None:
    budget = RecordBudget(10)
    await budget.acquire(10)
    first = asyncio.ensure_future(budget.acquire(10))
    await asyncio.sleep(0)
    budget.release(4)  # all of it to the first waiter
    late = asyncio.ensure_future(budget.acquire(1))
    second = asyncio.ensure_future(budget.acquire(3))
    await asyncio.sleep(0)
    assert first.result() == 4 and not late.done() and not second.done()
    budget.release(2)
    await asyncio.sleep(0)
    assert late.result() == 1 and second.result() == 1


async def test_a_cancelled_waiter_leaves_the_queue_and_blocks_nobody() -> None:
    budget = RecordBudget(10)
    await budget.acquire(10)
    gone = asyncio.ensure_future(budget.acquire(5))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert budget.waiting == 0
    budget.release(10)
    assert budget.in_use == 0
    assert await asyncio.wait_for(budget.acquire(5), 1) == 5, "nothing queued before it"


@pytest.mark.parametrize(
    "cancelled_first",
    [
        pytest.param(False, id="granted-then-cancelled-before-it-ran: the grant is handed back"),
        pytest.param(True, id="cancelled-while-queued: a release passes over it"),
    ],
)
async def test_a_cancelled_waiter_never_keeps_budget_from_the_next(cancelled_first: bool) -> None:
    budget = RecordBudget(10)
    await budget.acquire(10)
    cancelled = asyncio.ensure_future(budget.acquire(6))
    behind = asyncio.ensure_future(budget.acquire(6))
    await asyncio.sleep(0)
    if cancelled_first:
        cancelled.cancel()  # its future is cancelled; its task has not run yet
        budget.release(6)
    else:
        budget.release(6)  # granted to the first, which is cancelled before it can run
        cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    assert cancelled.cancelled()
    await asyncio.sleep(0)
    assert behind.result() == 6, "what was free went to the next in line"
    assert budget.in_use == 10 and budget.waiting == 0


@pytest.mark.parametrize("seed", range(40))
async def test_grants_and_releases_in_any_order_keep_the_invariants(seed: int) -> None:
    """Random readers that take, wait, are cancelled and hand back: what is free plus every
    grant held is the capacity; nobody waits while the first waiter's least grant is free;
    grants come in the order the waiters came and are never below the least asked."""
    rng = random.Random(seed)
    capacity = rng.randrange(1, 50)
    budget = RecordBudget(capacity, least_grant=rng.choice([None, 1, rng.randrange(1, 60)]))
    held: list[int] = []
    came: list[int] = []
    served: list[int] = []
    waiting: dict[int, int] = {}  # reader -> what it wants, while it has not been served
    tasks: dict[int, asyncio.Task[None]] = {}

    async def reader(n: int, wanted: int) -> None:
        came.append(n)
        waiting[n] = wanted
        try:
            granted = await budget.acquire(wanted)
        finally:
            del waiting[n]
        assert granted >= budget.least_for(wanted), "never less than the least grant"
        held.append(granted)
        served.append(n)

    for n in range(300):
        step = rng.random()
        if step < 0.45:
            tasks[n] = asyncio.ensure_future(reader(n, rng.randrange(1, 40)))
        elif step < 0.85 and held:
            budget.release(held.pop(rng.randrange(len(held))))
        elif tasks:
            victim = tasks.pop(rng.choice(list(tasks)))
            victim.cancel()
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert budget.in_use == sum(held), "a grant is held or free, never lost"
        assert budget.waiting == len(waiting)
        if waiting:
            first = waiting[next(iter(waiting))]
            free = budget.capacity - budget.in_use
            assert free < budget.least_for(first), "none waits while it could be served"
    assert served == [n for n in came if n in set(served)], "first come, first served"
    for task in tasks.values():
        task.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)


def test_the_least_grant_is_a_share_of_the_capacity_and_never_above_it() -> None:
    assert RecordBudget(40_000).least_grant == 2_500 == 40_000 // LEAST_GRANT_SHARE
    assert RecordBudget(10).least_grant == 1, "a small budget grants what is free"
    assert RecordBudget(100, least_grant=500).least_grant == 100, "all of it frees up: no stall"
    assert RecordBudget(100, least_grant=0).least_grant == 1


async def test_a_waiter_is_served_once_its_least_grant_is_free() -> None:
    """Releases of a few records each do not wake a reader for those few: it is served when
    the least grant is free, and takes what is free then (up to what it wants)."""
    budget = RecordBudget(100, least_grant=20)
    assert await budget.acquire(100) == 100
    waiter = asyncio.ensure_future(budget.acquire(50))
    await asyncio.sleep(0)
    budget.release(10)
    await asyncio.sleep(0)
    assert not waiter.done(), "10 free: less than the least grant"
    budget.release(15)
    assert await asyncio.wait_for(waiter, 1) == 25
    assert budget.in_use == 100


async def test_a_reader_that_wants_less_than_the_least_grant_needs_only_that() -> None:
    budget = RecordBudget(100, least_grant=20)
    assert await budget.acquire(95) == 95
    assert await budget.acquire(5) == 5, "all it wants is free"
    waiter = asyncio.ensure_future(budget.acquire(50))
    await asyncio.sleep(0)
    budget.release(19)
    await asyncio.sleep(0)
    assert not waiter.done()
    budget.release(1)
    assert await asyncio.wait_for(waiter, 1) == 20


async def test_a_newcomer_that_could_be_served_still_queues_behind_a_waiter() -> None:
    budget = RecordBudget(100, least_grant=20)
    await budget.acquire(100)
    first = asyncio.ensure_future(budget.acquire(50))
    await asyncio.sleep(0)
    budget.release(10)  # less than the first's least grant
    small = asyncio.ensure_future(budget.acquire(5))
    await asyncio.sleep(0)
    assert not small.done(), "no passing the first in line, or it could wait for ever"
    budget.release(10)
    await asyncio.sleep(0)
    assert first.result() == 20 and not small.done()


async def test_a_cancelled_first_waiter_lets_the_next_be_served_from_what_is_free() -> None:
    budget = RecordBudget(100, least_grant=20)
    await budget.acquire(100)
    first = asyncio.ensure_future(budget.acquire(50))
    await asyncio.sleep(0)
    budget.release(10)
    small = asyncio.ensure_future(budget.acquire(5))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert await asyncio.wait_for(small, 1) == 5, "served without waiting for a release"
    assert budget.waiting == 0 and budget.in_use == 95
