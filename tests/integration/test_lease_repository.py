"""The lease repository's conditional writes on moto's DynamoDB, over HTTP with aiobotocore."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumer.lease.repository import LeaseRepository
from devkit.local import aws_env, local_client
from kernel.aws import open_clients
from tests.conftest import Emulator
from tests.support import ITEM_PATHS, Stack, create_coordination_tables, item_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=ITEM_PATHS)
async def repo(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[LeaseRepository]:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    async with open_clients() as clients, item_client(clients, request.param) as db:
        await create_coordination_tables(clients, stack)
        yield LeaseRepository(db, stack.lease_table)


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


@pytest.fixture(params=ITEM_PATHS)
async def atomic_repo(
    emulators: tuple[Emulator, Emulator],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> AsyncIterator[LeaseRepository]:
    """A lease table on dynalite: moto's server does not evaluate a condition and its update
    atomically (eight racing takes: two winners in 5 runs of 24, measured 2026-12-03);
    dynalite does, as DynamoDB does."""
    endpoint = emulators[1].endpoint
    for name, value in aws_env(endpoint).items():
        monkeypatch.setenv(name, value)
    table = f"leases-{uuid.uuid4().hex[:8]}"
    local_client("dynamodb", endpoint).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    async with open_clients() as clients, item_client(clients, request.param) as db:
        yield LeaseRepository(db, table)


async def test_concurrent_takes_have_exactly_one_winner(atomic_repo: LeaseRepository) -> None:
    repo = atomic_repo
    for n in range(10):  # ten rounds of eight racing takes
        key = f"shard-{n}"
        await repo.create(key, "TRIM_HORIZON", frozenset())
        fresh = next(lease for lease in await repo.list() if lease.key == key)
        results = await asyncio.gather(*(repo.take(fresh, f"worker-{w}") for w in range(8)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, [w.owner for w in winners]
        stored = next(lease for lease in await repo.list() if lease.key == key)
        assert stored.owner == winners[0].owner and stored.counter == 1


async def test_list_pages_through_many_leases(repo: LeaseRepository) -> None:
    await asyncio.gather(
        *(repo.create(f"shard-{n:04d}", "LATEST", frozenset()) for n in range(120))
    )
    leases = await repo.list()
    assert len({lease.key for lease in leases}) == 120


# KCL table fidelity (issue 10): the table as the KCL would leave it, and read as it leaves it.


async def put_raw(repo: LeaseRepository, item: dict[str, Any]) -> None:
    await repo._db.put_item(TableName=repo.table, Item=item)


async def raw(repo: LeaseRepository, key: str) -> dict[str, Any]:
    answer = await repo._db.get_item(
        TableName=repo.table, Key={"leaseKey": {"S": key}}, ConsistentRead=True
    )
    return dict(answer["Item"])


async def test_new_leases_carry_hash_keys_and_get_reads_one(repo: LeaseRepository) -> None:
    assert await repo.create("shard-1", "TRIM_HORIZON", frozenset({"shard-0"}), (0, 2**127 - 1))
    item = await raw(repo, "shard-1")
    assert item["startingHashKey"] == {"S": "0"}
    assert item["endingHashKey"] == {"S": str(2**127 - 1)}
    lease = await repo.get("shard-1")
    assert lease is not None and lease.hash_range == (0, 2**127 - 1)
    assert await repo.get("shard-9") is None


async def test_checkpoint_drops_a_pending_checkpoint_and_shard_end_names_children(
    repo: LeaseRepository,
) -> None:
    await put_raw(
        repo,
        {
            "leaseKey": {"S": "shard-1"},
            "leaseOwner": {"S": "me"},
            "leaseCounter": {"N": "7"},
            "checkpoint": {"S": "100"},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "1"},
            "pendingCheckpoint": {"S": "150"},
            "pendingCheckpointSubSequenceNumber": {"N": "0"},
            "pendingCheckpointState": {"B": b"state"},
            "throughputKBps": {"N": "1.5"},  # a KCL 3.x attribute we keep
        },
    )
    lease = await repo.get("shard-1")
    assert lease is not None
    done = await repo.checkpoint(lease, "SHARD_END", 0, children=frozenset({"c2", "c1"}))
    assert done is not None and done.children == frozenset({"c1", "c2"})
    item = await raw(repo, "shard-1")
    assert not {"pendingCheckpoint", "pendingCheckpointSubSequenceNumber"} & item.keys()
    assert "pendingCheckpointState" not in item
    assert item["childShardIds"] == {"SS": ["c1", "c2"]}
    assert item["checkpoint"] == {"S": "SHARD_END"}
    assert item["throughputKBps"] == {"N": "1.5"}


async def test_take_clears_a_kcl3_checkpoint_owner(repo: LeaseRepository) -> None:
    await put_raw(
        repo,
        {
            "leaseKey": {"S": "shard-1"},
            "leaseOwner": {"S": "kcl-new"},
            "checkpointOwner": {"S": "kcl-old"},  # a hand-off the KCL 3.x fleet left unfinished
            "leaseCounter": {"N": "3"},
            "checkpoint": {"S": "TRIM_HORIZON"},
        },
    )
    lease = await repo.get("shard-1")
    assert lease is not None and lease.checkpoint_owner == "kcl-old"
    taken = await repo.take(lease, "me")
    assert taken is not None and taken.owner == "me" and taken.checkpoint_owner is None
    assert "checkpointOwner" not in await raw(repo, "shard-1")


async def test_items_that_are_not_leases_are_skipped(repo: LeaseRepository) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    for key, entity in (("worker-a", "WORKER_METRIC_STATS"), ("Leader", "LEADER")):
        await put_raw(repo, {"leaseKey": {"S": key}, "entityType": {"S": entity}})
    await put_raw(repo, {"leaseKey": {"S": "shard-2"}, "entityType": {"S": "LEASE"}})
    assert sorted(lease.key for lease in await repo.list()) == ["shard-1", "shard-2"]
    assert sorted(await repo.sample_keys()) == ["shard-1", "shard-2"]
    assert await repo.get("Leader") is None


# The leader's assign (membership protocol): conditional on the owner, and on the counter when
# given; switches counted, a KCL 3.x checkpointOwner dropped.


async def test_assign_from_no_owner(repo: LeaseRepository) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    assigned = await repo.assign("shard-1", "w1", owners={None})
    assert assigned is not None
    assert (assigned.owner, assigned.counter, assigned.owner_switches) == ("w1", 1, 1)
    assert assigned.updated_at is not None
    assert await repo.get("shard-1") == assigned
    assert await repo.assign("shard-1", "w2", owners={None}) is None, "it has an owner now"


async def test_assign_from_one_of_several_owners(repo: LeaseRepository) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    first = await repo.assign("shard-1", "w2", owners={None})
    assert first is not None
    moved = await repo.assign("shard-1", "w3", owners={"w1", "w2", None})
    assert moved is not None and (moved.owner, moved.counter) == ("w3", 2)
    again = await repo.assign("shard-1", "w1", owners={"w3", "w9"})
    assert again is not None and (again.owner, again.counter) == ("w1", 3)


async def test_assign_refuses_an_owner_not_named(repo: LeaseRepository) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    held = await repo.assign("shard-1", "w1", owners={None})
    assert held is not None
    assert await repo.assign("shard-1", "w2", owners={"w3", "w4"}) is None
    assert await repo.assign("shard-1", "w2", owners={None}) is None
    assert await repo.assign("shard-1", "w2", owners=set()) is None, "nobody is acceptable"
    assert await repo.get("shard-1") == held, "refused assigns change nothing"


async def test_assign_on_a_missing_lease_creates_nothing(repo: LeaseRepository) -> None:
    assert await repo.assign("shard-9", "w1", owners={None}) is None
    assert await repo.assign("shard-9", "w1", owners={None}, counter=0) is None
    assert await repo.get("shard-9") is None
    assert await repo.list() == []


async def test_assign_with_a_counter_condition(repo: LeaseRepository) -> None:
    await repo.create("shard-1", "TRIM_HORIZON", frozenset())
    (fresh,) = await repo.list()
    held = await repo.take(fresh, "w1")
    assert held is not None and held.counter == 1
    # The leader judged w1 gone at counter 1, but w1 renewed since: the counter refuses it.
    renewed = await repo.renew(held)
    assert renewed is not None
    assert await repo.assign("shard-1", "w2", owners={"w1"}, counter=held.counter) is None
    assert await repo.get("shard-1") == renewed
    moved = await repo.assign("shard-1", "w2", owners={"w1"}, counter=renewed.counter)
    assert moved is not None and (moved.owner, moved.counter) == ("w2", renewed.counter + 1)
    # The counter alone does not suffice: the owner must be one of ``owners`` too.
    assert await repo.assign("shard-1", "w3", owners={"w1"}, counter=moved.counter) is None
    # The previous owner's writes are fenced.
    assert await repo.renew(renewed) is None


async def test_assign_counts_switches_and_drops_a_kcl3_checkpoint_owner(
    repo: LeaseRepository,
) -> None:
    await put_raw(
        repo,
        {
            "leaseKey": {"S": "shard-1"},
            "leaseOwner": {"S": "kcl-new"},
            "checkpointOwner": {"S": "kcl-old"},
            "leaseCounter": {"N": "7"},
            "checkpoint": {"S": "100"},
            "ownerSwitchesSinceCheckpoint": {"N": "2"},
        },
    )
    assigned = await repo.assign("shard-1", "w1", owners={"kcl-new"}, counter=7)
    assert assigned is not None
    assert (assigned.owner, assigned.counter, assigned.owner_switches) == ("w1", 8, 3)
    assert assigned.checkpoint == "100" and assigned.checkpoint_owner is None
    assert "checkpointOwner" not in await raw(repo, "shard-1")
    # An item without ownerSwitchesSinceCheckpoint (written by other tools) starts from 0.
    await put_raw(
        repo,
        {"leaseKey": {"S": "shard-2"}, "leaseCounter": {"N": "0"}, "checkpoint": {"S": "LATEST"}},
    )
    second = await repo.assign("shard-2", "w1", owners={None})
    assert second is not None and (second.owner_switches, second.counter) == (1, 1)
