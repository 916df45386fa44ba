"""Fail-over's worst case, on virtual time: three coordinators, one killed, at many phases.

DESIGN §3 bounds fail-over by the lease duration + 2 s, measured from the kill to the survivors
processing every moved shard. What the protocol itself spends is measured here, until each
moved lease is consumable by a survivor: the leader seeing the victim's last beat, its beat
standing still for a lease duration, the round that assigns, the grantee learning of its
grant. Part of the 2 s stays for what follows (a consumer's first Kinesis requests), so the
protocol gets 1.5 s of it, whatever the phases of the kill, the beats and the rounds
(FAILOVER_RUNS=200: at most 1.09 s over the lease duration; 2.37 s before the rounds were
timed to expiries and grantees warned).
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest

from consumer.config import Settings
from consumer.lease.coordinator import LeaseCoordinator
from consumer.metrics import Metrics
from consumer.testing import LeaseTable, MemberTable, lease

pytestmark = pytest.mark.looptime

REQUEST_S = 0.01  # every lease and membership request, each way
PROTOCOL_SHARE_S = 1.5  # of the 2 s above the lease duration
SHARDS = 6
RUNS = int(os.environ.get("FAILOVER_RUNS", "12"))  # phases a case; more to explore
LEASE_OPS = ("get", "list", "assign", "create", "delete", "checkpoint", "release")
MEMBER_OPS = (
    *("beat", "members", "grant", "revoke", "expect", "forget", "poke", "leader"),
    *("name_successor", "claim_leadership", "renew_leadership", "release_leadership"),
)


def worker(leases: LeaseTable, members: MemberTable, me: str, duration: float) -> LeaseCoordinator:
    return LeaseCoordinator(
        leases,
        members,
        Settings(worker_id=me, lease_duration_s=duration, metrics_port=0),
        Metrics("s"),
        on_change=lambda: None,
        clock=asyncio.get_running_loop().time,
    )


def run(c: LeaseCoordinator) -> list[asyncio.Task[Any]]:
    coros = (c.run_beats(), c.run_fencing(), c.leader.run(asyncio.Event()))
    return [asyncio.create_task(coro) for coro in coros]


async def stopped(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def fail_over(
    duration: float, starts: tuple[float, float, float], kill_s: float, leader: bool
) -> float:
    """Seconds from killing the leader or a worker that is not (``leader``) until survivors
    hold every lease it held. The workers start ``starts`` seconds in (the phases of their
    beats and rounds); the kill comes ``kill_s`` into a second once the fleet is calm."""
    loop = asyncio.get_running_loop()
    leases = LeaseTable([lease(f"s{n}") for n in range(SHARDS)])
    members = MemberTable()
    members.latency = dict.fromkeys(MEMBER_OPS, 2 * REQUEST_S)
    leases.latency = dict.fromkeys(LEASE_OPS, REQUEST_S)
    leases.answer_latency = dict.fromkeys(LEASE_OPS, REQUEST_S)
    fleet = {me: worker(leases, members, me, duration) for me in ("w1", "w2", "w3")}
    started = loop.time()
    tasks = {}
    for (me, c), start in sorted(zip(fleet.items(), starts, strict=True), key=lambda x: x[1]):
        await asyncio.sleep(started + start - loop.time())
        tasks[me] = run(c)
    try:
        while sorted(len(c.consumable()) for c in fleet.values()) != [2, 2, 2]:
            assert loop.time() - started < 60, "never balanced"
            await asyncio.sleep(0.05)
        await asyncio.sleep(3 * duration / 10 + kill_s)  # calm rounds by now
        victim = next(me for me, c in fleet.items() if c.leader.leading() == leader)
        orphans = set(fleet[victim].held)
        killed_at = loop.time()
        await stopped(tasks.pop(victim))
        survivors = [c for me, c in fleet.items() if me != victim]
        while not orphans <= {key for c in survivors for key in c.consumable()}:
            assert loop.time() - killed_at < 3 * duration, "never failed over"
            await asyncio.sleep(0.01)
        return loop.time() - killed_at
    finally:
        for rest in tasks.values():
            await stopped(rest)


@pytest.mark.parametrize("victim", ["member", "leader"])
@pytest.mark.parametrize("duration", [6.0, 10.0])
async def test_fail_over_stays_within_the_lease_duration_and_the_protocols_share(
    duration: float, victim: str
) -> None:
    phases = random.Random(16)
    took = []
    for _ in range(RUNS):
        starts = (0.0, phases.random(), phases.random())
        took.append(await fail_over(duration, starts, phases.random(), victim == "leader"))
    print(
        f"fail-over of a {victim} at D = {duration}: max {max(took):.2f} s, min {min(took):.2f} s"
    )
    assert max(took) <= duration + PROTOCOL_SHARE_S
