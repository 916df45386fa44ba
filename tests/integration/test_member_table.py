"""The membership table's beats and conditional writes on moto's DynamoDB, over HTTP with
aiobotocore: the table `consumer setup` creates, as the worker and the leader use it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumer.lease.member_table import MemberRepository
from consumer.lease.members import LEADER_KEY, Beat, Leadership, Member
from kernel.aws import open_clients
from tests.support import ITEM_PATHS, Stack, create_coordination_tables, item_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=ITEM_PATHS)
async def table(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[MemberRepository]:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    async with open_clients() as clients, item_client(clients, request.param) as db:
        await create_coordination_tables(clients, stack)
        yield MemberRepository(db, stack.member_table)


async def raw(table: MemberRepository, worker_id: str) -> dict[str, Any] | None:
    answer = await table._db.get_item(
        TableName=table.table, Key={"workerId": {"S": worker_id}}, ConsistentRead=True
    )
    item = answer.get("Item")
    return None if item is None else dict(item)


# --- beats ------------------------------------------------------------------------------------


async def test_beat_creates_the_item_then_advances_it(table: MemberRepository) -> None:
    first = await table.beat("w1", Beat(incarnation="i1"))
    assert first == Member(worker_id="w1", beat=1, incarnation="i1")
    item = await raw(table, "w1")
    assert item is not None and item["updatedAt"]["S"].endswith("Z")
    second = await table.beat("w1", Beat(incarnation="i1", ends=3, leaving=True))
    assert (second.beat, second.ends, second.leaving) == (2, 3, True)
    third = await table.beat("w1", Beat(incarnation="i2"))
    assert (third.beat, third.incarnation, third.ends, third.leaving) == (3, "i2", 0, False)
    assert await table.members() == [third]


async def test_acks_delete_only_the_acked_keys(table: MemberRepository) -> None:
    w1 = await table.beat("w1", Beat(incarnation="i1"))
    assert await table.grant(w1, frozenset({"a", "b"}))
    assert await table.revoke(w1, frozenset({"x", "y"}))
    seen = await table.beat("w1", Beat(incarnation="i1"))
    assert (seen.grants, seen.revokes) == (frozenset({"a", "b"}), frozenset({"x", "y"}))
    acked = await table.beat(
        "w1", Beat("i1", acked_grants=frozenset({"a"}), acked_revokes=frozenset({"y"}))
    )
    assert (acked.grants, acked.revokes) == (frozenset({"b"}), frozenset({"x"}))
    # Acknowledging the last key of a set removes the attribute: it reads as empty.
    done = await table.beat(
        "w1", Beat("i1", acked_grants=frozenset({"b"}), acked_revokes=frozenset({"x"}))
    )
    assert (done.grants, done.revokes) == (frozenset(), frozenset())
    item = await raw(table, "w1")
    assert item is not None and not {"grants", "revokes"} & item.keys()


async def test_a_grant_concurrent_with_an_ack_survives_it(table: MemberRepository) -> None:
    w1 = await table.beat("w1", Beat(incarnation="i1"))
    assert await table.grant(w1, frozenset({"a", "b"}))
    ack = table.beat("w1", Beat("i1", acked_grants=frozenset({"a", "b"})))
    _, granted = await asyncio.gather(ack, table.grant(w1, frozenset({"c"})))
    assert granted
    (member,) = await table.members()
    assert member.grants == {"c"}, "in either order, only the acknowledged keys go"


async def test_grant_revoke_and_successor_need_the_worker_item(table: MemberRepository) -> None:
    gone = Member(worker_id="gone", beat=1, incarnation="i1")
    assert not await table.grant(gone, frozenset({"a"}))
    assert not await table.revoke(gone, frozenset({"a"}))
    assert not await table.name_successor("gone", True)
    assert await raw(table, "gone") is None, "a refused write creates no item"
    assert await table.grant(gone, frozenset()), "nothing to grant: no call, no refusal"
    await table.beat("w1", Beat(incarnation="i1"))
    assert await table.name_successor("w1", True)
    assert (await table.beat("w1", Beat(incarnation="i1"))).successor
    assert await table.name_successor("w1", False)
    assert not (await table.beat("w1", Beat(incarnation="i1"))).successor


async def test_grants_are_for_one_incarnation(table: MemberRepository) -> None:
    before = await table.beat("w1", Beat(incarnation="i1"))
    assert await table.grant(before, frozenset({"a"}))
    assert await table.revoke(before, frozenset({"x"}))
    # The worker restarts (or fences itself): its first beat drops what was meant for i1.
    fresh = await table.beat("w1", Beat(incarnation="i2", fresh=True))
    assert (fresh.incarnation, fresh.grants, fresh.revokes) == ("i2", frozenset(), frozenset())
    item = await raw(table, "w1")
    assert item is not None and not {"grants", "revokes"} & item.keys()
    # A leader that read i1 is refused; one that read i2 is not.
    assert not await table.grant(before, frozenset({"b"}))
    assert not await table.revoke(before, frozenset({"y"}))
    assert await table.grant(fresh, frozenset({"c"}))
    again = await table.beat("w1", Beat(incarnation="i2"))
    assert (again.grants, again.revokes) == (frozenset({"c"}), frozenset())


async def test_forget_is_conditional_on_the_beat(table: MemberRepository) -> None:
    seen = await table.beat("w1", Beat(incarnation="i1"))
    await table.beat("w1", Beat(incarnation="i1"))  # it beat again since we read it
    assert not await table.forget(seen)
    assert await raw(table, "w1") is not None
    (current,) = await table.members()
    assert await table.forget(current)
    assert await raw(table, "w1") is None
    assert not await table.forget(current), "already gone"


async def test_members_skips_the_leader_item_and_reads_every_page(table: MemberRepository) -> None:
    assert await table.claim_leadership("w0", None) is not None
    # ~20 KB per item: 60 workers are more than one Scan page (1 MB).
    padding = {"S": "x" * 20_000}
    for n in range(60):
        item = {"workerId": {"S": f"w{n:02d}"}, "beat": {"N": str(n)}, "pad": padding}
        item["incarnation"] = {"S": "i"}
        await table._db.put_item(TableName=table.table, Item=item)
    first_page = await table._db.scan(TableName=table.table, ConsistentRead=True)
    assert "LastEvaluatedKey" in first_page, "the test needs more than one page"
    members = await table.members()
    assert sorted(m.worker_id for m in members) == [f"w{n:02d}" for n in range(60)]
    assert {m.beat for m in members} == set(range(60))
    assert LEADER_KEY not in {m.worker_id for m in members}


# --- leadership ---------------------------------------------------------------------------------


async def test_claim_when_absent_has_one_winner(table: MemberRepository) -> None:
    assert await table.leader() is None
    results = await asyncio.gather(*(table.claim_leadership(f"w{n}", None) for n in range(4)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].counter == 1 and winners[0].successor is None
    assert await table.leader() == winners[0]
    assert await table.claim_leadership("late", None) is None, "the item exists now"


async def test_claim_over_a_seen_leadership_and_the_lost_race(table: MemberRepository) -> None:
    first = await table.claim_leadership("w1", None)
    assert first is not None
    renewed = await table.renew_leadership(first, "w2")
    assert renewed == Leadership("w1", 2, "w2")
    # w1 stops renewing; w2 and w3 both saw counter 2 not change and claim over it.
    taken = await table.claim_leadership("w2", renewed)
    assert taken == Leadership("w2", 3, None), "a claim removes the successor"
    assert await table.claim_leadership("w3", renewed) is None, "the counter moved"
    assert await table.leader() == taken


async def test_renew_with_and_without_a_successor(table: MemberRepository) -> None:
    current = await table.claim_leadership("w1", None)
    assert current is not None
    with_successor = await table.renew_leadership(current, "w2")
    assert with_successor == Leadership("w1", 2, "w2")
    item = await raw(table, LEADER_KEY)
    assert item is not None and item["successorId"] == {"S": "w2"}
    without = await table.renew_leadership(with_successor, None)
    assert without == Leadership("w1", 3, None)
    item = await raw(table, LEADER_KEY)
    assert item is not None and "successorId" not in item
    assert await table.renew_leadership(current, None) is None, "a stale counter"


async def test_renew_after_a_takeover_fails(table: MemberRepository) -> None:
    mine = await table.claim_leadership("w1", None)
    assert mine is not None
    theirs = await table.claim_leadership("w2", mine)
    assert theirs is not None
    assert await table.renew_leadership(mine, None) is None
    # Same counter, another owner: the owner condition alone refuses it too.
    assert await table.renew_leadership(Leadership("w1", theirs.counter), None) is None
    assert not await table.release_leadership(mine)
    assert await table.leader() == theirs


async def test_release_then_claim_by_another(table: MemberRepository) -> None:
    mine = await table.claim_leadership("w1", None)
    assert mine is not None
    mine = await table.renew_leadership(mine, "w2")
    assert mine is not None
    assert await table.release_leadership(mine)
    released = await table.leader()
    assert released == Leadership(None, mine.counter + 1, None)
    item = await raw(table, LEADER_KEY)
    assert item is not None and not {"leader", "successorId"} & item.keys()
    assert await table.renew_leadership(mine, None) is None, "released: nothing to renew"
    assert not await table.release_leadership(mine)
    successor = await table.claim_leadership("w2", released)
    assert successor == Leadership("w2", mine.counter + 2, None)
    assert await table.members() == [], "the leader item is not a member"


async def test_a_member_that_left_is_granted_and_asked_nothing_more(
    table: MemberRepository,
) -> None:
    """Its leaving beat was its last look at its item: a grant written after it would name a
    worker that has gone, so the write is refused and the leader releases the lease."""
    live = await table.beat("w1", Beat(incarnation="i1"))
    assert await table.grant(live, frozenset({"a"}))
    await table.beat("w1", Beat(incarnation="i1", acked_grants=frozenset({"a"}), leaving=True))
    assert not await table.grant(live, frozenset({"b"}))
    assert not await table.revoke(live, frozenset({"a"}))
    item = await raw(table, "w1")
    assert item is not None and not {"grants", "revokes"} & item.keys()
