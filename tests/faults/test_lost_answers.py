"""Lease writes applied whose answer was lost (issue 10, case 7), on dynalite over HTTP.

The fault proxy forwards the UpdateItem, then drops the connection instead of answering;
botocore sends the request again, and the second one fails its condition because the first
was applied. The lease is read again and recognised as ours: not a lost lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from consumer.lease.held import HeldLease, Liveness
from consumer.lease.repository import LeaseRepository
from devkit.faultproxy import Rule
from kernel.aws import open_clients
from tests.faults.conftest import Faulty

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def through_proxy(
    faulty: Faulty, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LeaseRepository]:
    faulty.stack.setup(shards=1)
    for name, value in faulty.stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", faulty.dynamodb.endpoint)
    async with open_clients(attempts=3) as clients:
        yield LeaseRepository(clients.dynamodb, faulty.stack.lease_table)


async def held(repository: LeaseRepository) -> HeldLease:
    await repository.create("shard-x", "TRIM_HORIZON", frozenset())
    (fresh,) = await repository.list()
    taken = await repository.take(fresh, "me")
    assert taken is not None
    loop = asyncio.get_running_loop()
    liveness = Liveness(duration=30, margin=3, clock=loop.time)
    liveness.renewed(loop.time())  # as after an answered beat
    return HeldLease(taken, repository, liveness=liveness, clock=loop.time)


async def test_an_assignment_whose_answer_was_lost_is_a_failed_condition_to_read_again(
    faulty: Faulty, through_proxy: LeaseRepository
) -> None:
    """The leader's write: botocore's second request fails its condition, and the lease as
    read again names the member (the leader then grants it, see test_member_side)."""
    await through_proxy.create("shard-y", "TRIM_HORIZON", frozenset())
    faulty.dynamodb.set_rules([Rule("UpdateItem", "lose_answer", limit=1)])
    assert await through_proxy.assign("shard-y", "w1", owners={None}) is None
    assert faulty.dynamodb.injected[("UpdateItem", "lose_answer")] == 1
    stored = await through_proxy.get("shard-y")
    assert stored is not None and (stored.owner, stored.counter) == ("w1", 1)


@pytest.mark.parametrize("operation", ["checkpoint", "release"])
async def test_a_lease_write_whose_answer_was_lost_is_recognised(
    faulty: Faulty, through_proxy: LeaseRepository, operation: str
) -> None:
    lease = await held(through_proxy)
    faulty.dynamodb.set_rules([Rule("UpdateItem", "lose_answer", limit=1)])
    write = {
        "checkpoint": lambda: lease.checkpoint("49600000000000000000000000000000000000000001"),
        "release": lease.release,
    }[operation]
    assert await write() is True
    assert faulty.dynamodb.injected[("UpdateItem", "lose_answer")] == 1
    (stored,) = await through_proxy.list()
    assert stored.counter == 2, "applied once, by the first request"
    assert stored == lease.lease
    assert lease.lost is (operation == "release")
