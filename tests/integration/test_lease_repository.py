"""The lease repository's conditional writes on moto's DynamoDB, over HTTP with aiobotocore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from consumer.aws import open_clients
from consumer.lease.repository import LeaseRepository
from tests.support import Stack

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def repo(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LeaseRepository]:
    stack.setup(shards=1)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    async with open_clients() as clients:
        yield LeaseRepository(clients.dynamodb, stack.lease_table)


async def test_create_is_idempotent(repo: LeaseRepository) -> None:
    assert await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    assert not await repo.create("shard-1", "LATEST", frozenset())
    (lease,) = await repo.list()
    assert (lease.key, lease.owner, lease.counter, lease.checkpoint) == (
        "shard-1",
        None,
        0,
        "TRIM_HORIZON",
    )


async def test_take_renew_checkpoint_release_each_advance_the_counter(
    repo: LeaseRepository,
) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset({"shard-0"}))
    (fresh,) = await repo.list()
    taken = await repo.take(fresh, "me")
    assert taken and taken.owner == "me" and taken.counter == 1 and taken.owner_switches == 1
    renewed = await repo.renew(taken)
    assert renewed and renewed.counter == 2
    checkpointed = await repo.checkpoint(renewed, "4950000000000000000000000001", 3)
    assert checkpointed and checkpointed.counter == 3
    assert (checkpointed.checkpoint, checkpointed.sub_sequence, checkpointed.owner_switches) == (
        "4950000000000000000000000001",
        3,
        0,
    )
    assert checkpointed.parents == frozenset({"shard-0"})
    released = await repo.release(checkpointed)
    assert released and released.owner is None and released.counter == 4
    (stored,) = await repo.list()
    assert stored == released


async def test_stale_counter_loses_the_race_without_raising(repo: LeaseRepository) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    (fresh,) = await repo.list()
    mine = await repo.take(fresh, "me")
    assert mine is not None
    assert await repo.take(fresh, "peer") is None, "the counter moved: the peer's take is stale"
    stolen = await repo.take(mine, "peer")
    assert stolen and stolen.owner == "peer"
    # Every write of the old owner is now refused: renew, checkpoint, release.
    assert await repo.renew(mine) is None
    assert await repo.checkpoint(mine, "123") is None
    assert await repo.release(mine) is None
    (stored,) = await repo.list()
    assert stored.owner == "peer" and stored.checkpoint == "TRIM_HORIZON"


async def test_concurrent_takes_have_exactly_one_winner(repo: LeaseRepository) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    (fresh,) = await repo.list()
    results = await asyncio.gather(*(repo.take(fresh, f"worker-{n}") for n in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    (stored,) = await repo.list()
    assert stored.owner == winners[0].owner and stored.counter == 1


async def test_list_pages_through_many_leases(repo: LeaseRepository) -> None:
    await asyncio.gather(
        *(repo.create(f"shard-{n:04d}", "LATEST", frozenset()) for n in range(120))
    )
    leases = await repo.list()
    assert len({lease.key for lease in leases}) == 120
