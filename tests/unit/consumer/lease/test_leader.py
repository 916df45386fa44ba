"""The elected leader on virtual time, against in-memory tables (consumer.lease.leader).

``looptime`` makes the loop's clock virtual; every Leader reads that clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from consumer.config import Settings
from consumer.lease.leader import WATCH_S, Leader
from consumer.lease.members import Beat, Leadership
from consumer.lease.model import SHARD_END, Lease
from consumer.lease.rounds import LEASE_SCAN_S
from consumer.metrics import Metrics
from consumer.testing import LeaseTable, MemberTable, client_error, lease

pytestmark = pytest.mark.looptime

DURATION = 10.0


def leader(leases: LeaseTable, members: MemberTable, me: str = "w1", **kwargs: object) -> Leader:
    loop = asyncio.get_running_loop()
    settings = Settings(worker_id=me, lease_duration_s=DURATION, metrics_port=0)
    return Leader(leases, members, settings, Metrics("s"), clock=loop.time, **kwargs)  # type: ignore[arg-type]


def noted_abdications(boss: Leader) -> list[str]:
    """Why ``boss`` abdicates, each time, from now on (it still does)."""
    abdications: list[str] = []
    abdicate = boss._abdicate

    def noted(why: str) -> None:
        abdications.append(why)
        abdicate(why)

    boss._abdicate = noted  # type: ignore[method-assign]
    return abdications


async def beat(members: MemberTable, *workers: str, incarnation: str = "i1") -> None:
    for worker in workers:
        await members.beat(worker, Beat(incarnation))


async def seen_beating(boss: Leader, members: MemberTable, *workers: str) -> None:
    """A leader assigns only to members it has seen beat: a round, a beat each, a round."""
    await boss.step()
    await beat(members, *workers)
    await boss.step()


async def beating(members: MemberTable, *workers: str) -> None:
    """Members that beat every second until cancelled."""
    while True:
        await beat(members, *workers)
        await asyncio.sleep(1.0)


async def test_the_first_worker_is_elected_and_assigns_every_lease_to_the_live_members() -> None:
    leases, members = LeaseTable([lease(f"s{n}") for n in range(4)]), MemberTable()
    await beat(members, "w1", "w2")
    first, second = leader(leases, members), leader(leases, members, "w2")
    await first.step()
    await second.step()
    assert first.leading() and not second.leading()
    assert all(leases[key].owner is None for key in leases.items), "not seen beating yet"
    await seen_beating(first, members, "w1", "w2")
    owners = sorted(leases[key].owner or "" for key in leases.items)
    assert owners == ["w1", "w1", "w2", "w2"]
    granted = members["w1"].grants | members["w2"].grants
    assert granted == frozenset(leases.items)


async def test_a_member_that_stops_beating_keeps_its_leases_for_a_lease_duration() -> None:
    leases, members = LeaseTable([lease("a", "w2"), lease("b", "w1")]), MemberTable()
    await beat(members, "w1", "w2")
    boss = leader(leases, members)
    keep_w1 = asyncio.create_task(beating(members, "w1"))
    try:
        await boss.step()
        started = asyncio.get_running_loop().time()
        while leases["a"].owner == "w2":
            await asyncio.sleep(0.1)
            await boss.step()
        waited = asyncio.get_running_loop().time() - started
    finally:
        keep_w1.cancel()
    assert DURATION <= waited <= DURATION + 1.5
    assert leases["a"].owner == "w1" and "a" in members["w1"].grants


async def test_a_member_that_leaves_has_its_leases_reassigned_in_the_next_round() -> None:
    leases, members = LeaseTable([lease("a"), lease("b", "w2")]), MemberTable()
    await beat(members, "w1", "w2")
    boss = leader(leases, members)
    await seen_beating(boss, members, "w1", "w2")
    await members.beat("w2", Beat("i1", leaving=True))
    await boss.step()
    assert leases["b"].owner == "w1"


async def test_a_restarted_member_is_granted_again_what_names_it() -> None:
    leases, members = LeaseTable([lease("a", "w2"), lease("b", "w1")]), MemberTable()
    await beat(members, "w1", "w2")
    boss = leader(leases, members)
    await boss.step()
    await members.beat("w2", Beat("i2", fresh=True))
    await boss.step()
    assert leases["a"].owner == "w2" and leases["a"].counter == 2  # assigned anew: fenced
    assert "a" in members["w2"].grants


async def test_a_new_member_gets_its_share_through_hand_backs() -> None:
    leases = LeaseTable([lease(f"s{n}", "w1") for n in range(4)])
    members = MemberTable()
    await beat(members, "w1")
    boss = leader(leases, members)
    await seen_beating(boss, members, "w1")
    await beat(members, "w2")
    await seen_beating(boss, members, "w1", "w2")
    asked = members["w1"].revokes
    assert len(asked) == 2 and all(leases[key].owner == "w1" for key in asked)
    for key in asked:  # w1 hands them back and acknowledges
        await leases.release(leases[key])
    await members.beat("w1", Beat("i1", acked_revokes=asked))
    await boss.step()
    assert {key for key in asked if leases[key].owner == "w2"} == asked


async def test_a_shard_end_makes_the_leader_read_the_table_and_sync_soon() -> None:
    synced: list[frozenset[str]] = []

    async def sync(existing: frozenset[str]) -> int:
        synced.append(existing)
        return 0

    leases, members = LeaseTable([lease("p", "w1")]), MemberTable()
    await beat(members, "w1")
    boss = leader(leases, members, sync_shards=sync)
    await boss.step()
    assert len(synced) == 1
    leases.items["p"] = lease("p", "w1", counter=2, checkpoint=SHARD_END)
    leases.items["c"] = lease("c", parents=frozenset({"p"}))
    await members.beat("w1", Beat("i1", ends=1))
    for _ in range(8):  # rounds every 0.5 s: the next read is due within 2 s, not 30
        await asyncio.sleep(0.5)
        await boss.step()
    assert leases["c"].owner == "w1" and len(synced) == 2


async def test_finished_leases_are_deleted_once_their_children_started() -> None:
    leases = LeaseTable(
        [
            lease("p", checkpoint=SHARD_END, children=frozenset({"c"})),
            lease("c", "w1", checkpoint="123", parents=frozenset({"p"})),
        ]
    )
    members = MemberTable()
    await beat(members, "w1")
    await leader(leases, members).step()
    assert set(leases.items) == {"c"}


async def test_the_successor_takes_over_a_lease_duration_after_the_leader_stopped() -> None:
    leases, members = LeaseTable(), MemberTable()
    await beat(members, "w1", "w2")
    boss, heir = leader(leases, members), leader(leases, members, "w2")
    await boss.step()
    heir.successor = True
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    while not heir.leading():
        await asyncio.sleep(0.5)
        await heir.step()
    assert DURATION <= loop.time() - stopped <= DURATION + 1.5


async def test_other_workers_look_at_the_leader_item_rarely_once_they_saw_it_renewed() -> None:
    leases, members = LeaseTable(), MemberTable()
    boss = leader(leases, members)
    await boss.step()  # elected, renews every second from its own loop
    renewals = asyncio.create_task(boss._renew_forever())
    bystander = leader(leases, members, "w3")
    before = [op for _, op, _ in members.calls].count("leader")  # the leader's own look
    try:
        for _ in range(20):
            await bystander.step()
            await asyncio.sleep(0.5)
        looks = [op for _, op, _ in members.calls].count("leader")
        assert looks - before <= 3, "a newcomer looks closely only until it sees a renewal"
        await asyncio.sleep(WATCH_S)
        await bystander.step()
        assert [op for _, op, _ in members.calls].count("leader") == looks + 1
    finally:
        renewals.cancel()
    assert not bystander.leading()


async def test_a_newcomer_whose_leader_died_before_it_started_takes_over_in_a_lease_duration() -> (
    None
):
    """Found by the orders SIGKILL test: a one-replica fleet whose worker was SIGKILLed and
    replaced before it named a successor; the replacement must not wait WATCH_S to look."""
    leases, members = LeaseTable(), MemberTable()
    await members.claim_leadership("w1", None)  # and w1 dies at once
    loop = asyncio.get_running_loop()
    died = loop.time()
    newcomer = leader(leases, members, "w2")
    while not newcomer.leading():
        await newcomer.step()
        await asyncio.sleep(0.5)
        assert loop.time() - died <= DURATION + 2.0, "the replacement waited too long"
    assert loop.time() - died >= DURATION


async def test_a_resigning_leader_hands_over_at_once() -> None:
    leases, members = LeaseTable([lease("a", "w1")]), MemberTable()
    await beat(members, "w1", "w2")
    boss, heir = leader(leases, members), leader(leases, members, "w2")
    await seen_beating(boss, members, "w1", "w2")
    await leases.release(leases["a"])
    await members.beat("w1", Beat("i1", leaving=True))
    await boss.resign()
    assert not boss.leading()
    assert leases["a"].owner == "w2"  # the last round gave our lease away
    heir.successor = True
    await heir.step()
    assert heir.leading()


async def test_a_leader_whose_renewals_go_unanswered_stops_leading_in_time() -> None:
    leases, members = LeaseTable([lease("a")]), MemberTable()
    await beat(members, "w1")
    boss = leader(leases, members)
    await boss.step()
    members.fault = lambda op, key: TimeoutError() if op == "renew_leadership" else None
    loop = asyncio.get_running_loop()
    since = loop.time()
    failures = 0
    while boss.leading():
        try:
            await boss.step()
        except TimeoutError:
            failures += 1
        await asyncio.sleep(0.25)
    assert failures >= 8
    assert loop.time() - since <= DURATION - 1.0 + 0.5  # before any successor may take over


async def test_a_renewal_applied_whose_answer_was_lost_keeps_the_leadership() -> None:
    """A renewal abandoned by its timeout may have been applied: the next one then fails its
    condition on the leader's own counter. Reading the item again, the leader finds itself
    one past what it knew and leads on — it must not abdicate and fence every lease it holds
    (seen in `make demo` under load: a leader lost its leadership to itself, then its
    leases)."""
    leases, members = LeaseTable([lease("a")]), MemberTable()
    await beat(members, "w1")
    boss = leader(leases, members)
    await boss.step()
    assert boss.leading()
    renew = members.renew_leadership
    lost: list[object] = []

    async def applied_then_lost(current: Leadership, successor: str | None) -> object:
        result = await renew(current, successor)
        if not lost:
            lost.append(result)
            raise TimeoutError("the answer was lost")
        return result

    members.renew_leadership = applied_then_lost  # type: ignore[method-assign,assignment]
    abdications = noted_abdications(boss)
    for _ in range(8):
        with contextlib.suppress(TimeoutError):
            await boss.step()
        await asyncio.sleep(1.0)
    assert lost, "a renewal was applied and its answer lost"
    assert abdications == [] and boss.leading()
    assert members.leadership is not None and members.leadership.owner == "w1"
    assert members.leadership.counter >= 4, "renewed on since"
    recovered = boss._metrics.registry.get_sample_value(
        "telemax_lease_writes_recovered_total",
        {"stream": boss._settings.stream, "operation": "leadership_renewal"},
    )
    assert recovered == 1


async def test_the_lease_table_is_read_rarely_in_steady_state() -> None:
    leases, members = LeaseTable([lease(f"s{n}") for n in range(10)]), MemberTable()
    boss = leader(leases, members)
    keep = asyncio.create_task(beating(members, "w1", "w2"))
    try:
        for _ in range(int(2 * LEASE_SCAN_S / 0.5)):
            await boss.step()
            await asyncio.sleep(0.5)
    finally:
        keep.cancel()
    scans = [op for _, op, _ in leases.calls].count("list")
    assert scans <= 3


async def test_a_leaving_worker_pokes_the_leader_which_runs_a_round_at_once() -> None:
    from consumer.lease.coordinator import LeaseCoordinator

    leases, members = LeaseTable([lease("a", "w2")]), MemberTable()
    loop = asyncio.get_running_loop()

    def worker(name: str) -> LeaseCoordinator:
        settings = Settings(worker_id=name, lease_duration_s=DURATION, metrics_port=0)
        return LeaseCoordinator(
            leases, members, settings, Metrics("s"), on_change=lambda: None, clock=loop.time
        )

    boss, leaving = worker("w1"), worker("w2")
    await boss.beat()
    await leaving.beat()
    await boss.leader.step()
    assert boss.leader.leading() and not boss.leader.wake.is_set()
    await leases.release(leases["a"])
    await leaving.leave()
    assert members["w2"].leaving and members["w1"].pokes == 1
    await boss.beat()
    assert boss.leader.wake.is_set()


async def test_a_leader_cut_off_fences_itself_and_its_successor_reassigns_its_leases() -> None:
    """Leases are bound by leadership too: when the successor takes over from a leader whose
    renewals stopped, that leader has already stopped using its leases."""
    from consumer.lease.held import Liveness

    loop = asyncio.get_running_loop()
    leases, members = LeaseTable([lease("a", "w1"), lease("b", "w2")]), MemberTable()
    await beat(members, "w1", "w2")
    liveness = Liveness(duration=DURATION, margin=1.0, clock=loop.time)
    liveness.renewed(loop.time() + 1_000)  # its beats go on: only leadership fails
    boss = leader(leases, members, liveness=liveness)
    heir = leader(leases, members, "w2")
    heir.successor = True
    await boss.step()
    assert boss.leading() and liveness.leading_since is not None
    cut_off = ("renew_leadership", "claim_leadership", "leader")

    def fault(op: str, key: str) -> BaseException | None:
        return TimeoutError() if op in cut_off and key == "@leader" and not heir_turn else None

    heir_turn = False
    members.fault = fault
    keep = asyncio.create_task(beating(members, "w2"))  # the heir's own beats
    cut_at = loop.time()
    fenced_at = None
    before = leases["a"].counter
    while leases["a"].counter == before and loop.time() - cut_at < 3 * DURATION:
        await asyncio.sleep(0.25)
        if fenced_at is None and not liveness.valid():
            fenced_at = loop.time()
        with contextlib.suppress(TimeoutError):
            await boss.step()
        heir_turn = True  # only the cut-off leader's requests are lost
        await heir.step()
        heir_turn = False
    keep.cancel()
    # Reassigned (here to w1 again, whose beats go on: it fenced itself and holds nothing,
    # so it gets its share back through a grant) without waiting for w1's beats to lapse.
    assert heir.leading() and leases["a"].counter == before + 1
    assert "a" in members[leases["a"].owner or ""].grants
    assert fenced_at is not None and fenced_at - cut_at <= DURATION - 1.0 + 0.5
    assert loop.time() - cut_at <= DURATION + 2 + 0.5  # the successor's watch, one round


async def test_finished_leases_are_collected_soon_after_a_shard_end() -> None:
    leases = LeaseTable([lease("p", "w1"), lease("c", parents=frozenset({"p"}))])
    members = MemberTable()
    keep = asyncio.create_task(beating(members, "w1"))
    boss = leader(leases, members)
    try:
        await boss.step()
        leases.items["p"] = lease("p", None, counter=3, checkpoint=SHARD_END)
        await members.beat("w1", Beat("i1", ends=1))
        for _ in range(6):
            await asyncio.sleep(0.5)
            await boss.step()
        assert leases["c"].owner == "w1" and "p" in leases.items  # child not started yet
        leases.items["c"] = lease("c", "w1", counter=5, checkpoint="49", parents=frozenset({"p"}))
        for _ in range(14):  # within the finished-lease rescans (5 s), not the 60 s read
            await asyncio.sleep(0.5)
            await boss.step()
        assert "p" not in leases.items
    finally:
        keep.cancel()


async def test_a_worker_named_successor_watches_closely_from_then_on() -> None:
    leases, members = LeaseTable(), MemberTable()
    await members.claim_leadership("w1", None)
    heir = leader(leases, members, "w2")
    await heir.step()  # not the successor yet: the next look is WATCH_S away
    heir.name_successor(True)
    await asyncio.sleep(0.5)
    await heir.step()
    assert [op for _, op, _ in members.calls].count("leader") == 2


async def test_a_leader_that_lost_its_lease_and_claims_it_again_holds_nothing_meanwhile() -> None:
    """Found by `make sim`: a leader whose renewals were throttled for a lease duration
    abdicated and, the item still naming it, claimed leadership again in the same step; its
    leases, reassigned as a deposed leader's, stayed consumable under it until a checkpoint
    was refused. Leadership lost lapses every lease at once, whatever comes after."""
    from consumer.lease.coordinator import LeaseCoordinator

    loop = asyncio.get_running_loop()
    leases, members = LeaseTable([lease("a"), lease("b")]), MemberTable()
    settings = Settings(worker_id="w1", lease_duration_s=DURATION, metrics_port=0)
    c = LeaseCoordinator(
        leases, members, settings, Metrics("s"), on_change=lambda: None, clock=loop.time
    )
    await c.beat()
    await c.leader.step()
    await c.beat()
    await c.leader.step()
    await c.beat()
    assert set(c.consumable()) == {"a", "b"}
    members.fault = lambda op, key: TimeoutError() if op == "renew_leadership" else None
    while c.leader.leading():
        await c.beat()
        with contextlib.suppress(TimeoutError):
            await c.leader.step()
        await asyncio.sleep(0.5)
    assert c.consumable() == {}, "fenced with the leadership, beats or not"
    members.fault = lambda op, key: None
    await c.leader.step()  # claims again, as the deposed leader's successor
    assert c.leader.leading()
    assert c.consumable() == {}, "nothing revived by the new leadership"
    c.fence()
    assert c.held == {}


async def test_leadership_holds_while_rounds_take_longer_than_a_lease_duration() -> None:
    """Found by `make sim`: renewals ran between rounds, and a round whose members read and
    lease Scan took 4 s each let leadership lapse (and every lease of the leader with it)."""
    leases, members = LeaseTable([lease(f"s{n}") for n in range(4)]), MemberTable()
    boss = leader(leases, members)
    abdications = noted_abdications(boss)
    keep = asyncio.create_task(beating(members, "w1", "w2"))
    stop = asyncio.Event()
    running = asyncio.create_task(boss.run(stop))
    try:
        await asyncio.sleep(3.0)
        assert boss.leading()
        members.latency["members"] = leases.latency["list"] = DURATION / 2 - 0.5
        await asyncio.sleep(2 * LEASE_SCAN_S + DURATION)
        assert [op for _, op, _ in leases.calls].count("list") >= 2, "slow Scans happened"
        assert abdications == []
    finally:
        stop.set()
        boss.wake.set()
        keep.cancel()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_new_leader_assigns_nothing_to_a_member_it_has_not_seen_beat() -> None:
    """Found by `make lease-cost`: a leader elected just after a worker died saw that worker's
    item unchanged for less than a lease duration, counted it live, and handed it leases that
    then waited a lease duration to move again."""
    leases, members = LeaseTable([lease(f"s{n}") for n in range(4)]), MemberTable()
    await beat(members, "w1", "dead")
    boss = leader(leases, members)
    keep = asyncio.create_task(beating(members, "w1"))
    try:
        for _ in range(6):
            await boss.step()
            await asyncio.sleep(0.5)
    finally:
        keep.cancel()
    assert {leases[key].owner for key in leases.items} == {"w1"}


async def test_a_failed_shard_sync_is_tried_again_soon_not_a_sync_interval_later() -> None:
    """Without leases nothing is consumed: a ListShards that failed at election (throttled)
    must not wait the whole shard-sync interval (60 s) to be tried again."""
    from consumer.testing import client_error

    calls: list[float] = []

    async def sync(existing: frozenset[str]) -> int:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise client_error("LimitExceededException", op="ListShards")
        return 0

    leases, members = LeaseTable(), MemberTable()
    boss = leader(leases, members, sync_shards=sync)
    keep = asyncio.create_task(beating(members, "w1"))
    try:
        for _ in range(20):
            with contextlib.suppress(Exception):
                await boss.step()
            await asyncio.sleep(0.5)
    finally:
        keep.cancel()
    assert len(calls) >= 2 and calls[1] - calls[0] <= 5.0


async def test_a_successor_that_takes_over_assigns_the_dead_leaders_leases_at_once() -> None:
    """The successor reads the members while the leader item stands still, so that the round
    that follows its claim already knows who beats and can assign: a dead leader's leases
    move in that round, not one or two rounds later (leader fail-over is the slowest kind)."""
    loop = asyncio.get_running_loop()
    leases = LeaseTable([lease("a", "w1"), lease("b", "w2"), lease("c", "w3")])
    members = MemberTable()
    await beat(members, "w1", "w2", "w3")
    boss, heir = leader(leases, members), leader(leases, members, "w2")
    await boss.step()  # w1 leads, then dies: no renewal, no beat from now on
    died_at = loop.time()
    heir.name_successor(True)
    keep = asyncio.create_task(beating(members, "w2", "w3"))
    claimed_at = None
    try:
        while leases["a"].owner == "w1" and loop.time() - died_at < 3 * DURATION:
            await heir.step()
            if claimed_at is None and heir.leading():
                claimed_at = loop.time()
            await asyncio.sleep(0.25)
    finally:
        keep.cancel()
    assert claimed_at is not None and leases["a"].owner in ("w2", "w3")
    moved_at = loop.time() - 0.25
    assert moved_at - claimed_at <= 0.01, "assigned in the round that followed the claim"
    assert moved_at - died_at <= DURATION + 1.0 + 0.5  # the watch, one round
    warned = [(key, at) for at, op, key in members.calls if op == "expect"]
    assert [key for key, _ in warned] == ["w3"], "the others, once: not itself, not the leader"
    assert members["w3"].expect_s == pytest.approx(died_at + DURATION - warned[0][1], abs=1.0)


async def test_what_a_successor_saw_before_the_leader_recovered_is_forgotten() -> None:
    """A successor that read the members while the leader item stood still, then saw the
    leader renew again, must not count a member as beating for what it saw back then: a
    member that died since would get leases (and its shards wait a lease duration more)."""
    loop = asyncio.get_running_loop()
    leases = LeaseTable([lease("a", "w1"), lease("b", "w3")])
    members = MemberTable()
    await beat(members, "w1", "w2", "w3")
    boss, heir = leader(leases, members), leader(leases, members, "w2")
    await boss.step()
    heir.name_successor(True)
    keep = asyncio.create_task(beating(members, "w2", "w3"))
    try:
        for _ in range(8):  # the leader item stands still for 8 s: the heir reads the members
            await heir.step()
            await asyncio.sleep(1.0)
        await boss.renew_if_due()  # the leader was only slow
        await heir.step()
        keep.cancel()
        keep = asyncio.create_task(beating(members, "w2"))  # w3 dies now; then the leader too
        dead_at = loop.time()
        while not heir.leading() and loop.time() - dead_at < 3 * DURATION:
            await asyncio.sleep(0.25)
            await heir.step()
    finally:
        keep.cancel()
    assert heir.leading()
    assert leases["b"].owner != "w3" or loop.time() - dead_at >= DURATION
    assert leases["a"].owner == "w2", "the dead leader's lease goes to the live member only"


async def test_a_round_comes_when_a_still_members_lease_duration_ends_not_a_period_later() -> None:
    """The leader reads the members when w2's beat will have stood still for a lease duration,
    wherever that falls between its rounds: its leases move one read after that moment."""
    loop = asyncio.get_running_loop()
    leases = LeaseTable([lease("a", "w2"), lease("b", "w1"), lease("c", "w1"), lease("d", "w3")])
    members = MemberTable()
    read_s = 0.13
    members.latency["members"] = read_s
    boss, stop = leader(leases, members), asyncio.Event()

    async def w2_beats() -> None:
        await asyncio.sleep(0.37)
        for _ in range(4):
            await beat(members, "w2")
            await asyncio.sleep(1.0)

    runs = (beating(members, "w1", "w3"), w2_beats(), boss.run(stop))
    tasks = [asyncio.create_task(c) for c in runs]
    try:
        while leases["a"].owner == "w2":
            assert loop.time() < 5 * DURATION, "never reassigned"
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        boss.wake.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    last_beat = max(at for at, op, key in members.calls if (op, key) == ("beat", "w2"))
    reads = [at + read_s for at, op, _ in members.calls if op == "members"]
    since = min(done for done in reads if done > last_beat)
    (assigned_at,) = [w.at for w in leases.writes if w.op == "assign" and w.key == "a"]
    assert since + DURATION <= assigned_at <= since + DURATION + read_s + 0.01
    assert leases["a"].owner == "w3", "the member with the fewest leases"
    ((warned_at, _, _),) = [call for call in members.calls if call[1:] == ("expect", "w3")]
    assert warned_at + members["w3"].expect_s == pytest.approx(since + DURATION)


async def test_leases_created_by_a_shard_sync_are_assigned_in_the_same_round() -> None:
    """A fresh stream: the leader's first round lists the shards and creates their leases;
    it reads them and assigns them then, not a round (0.5 s) later (first record sooner)."""
    leases, members = LeaseTable(), MemberTable()

    async def sync(existing: frozenset[str]) -> int:
        fresh = {f"s{n}" for n in range(4)} - existing
        for key in sorted(fresh):
            await leases.create(key, "TRIM_HORIZON", frozenset())
        return len(fresh)

    # a lone worker counts its own beat at once (its item carries its incarnation)
    boss = leader(leases, members, sync_shards=sync, incarnation=lambda: "i1")
    await beat(members, "w1")
    await boss.step()
    assert sorted(w.key for w in leases.writes if w.op == "assign") == ["s0", "s1", "s2", "s3"]
    assert members["w1"].grants == frozenset({"s0", "s1", "s2", "s3"})


async def test_new_leases_whose_first_read_failed_are_read_in_the_next_round() -> None:
    """The read right after a sync is throttled: the scan stays due, so the next round reads
    and assigns them (not LEASE_SCAN_S later: CI's throttled-lease-table run waited 90 s)."""
    from consumer.testing import client_error

    leases, members = LeaseTable(), MemberTable()
    lists = 0

    def throttle_second_list(op: str, key: str) -> BaseException | None:
        nonlocal lists
        if op != "list":
            return None
        lists += 1
        return client_error("ProvisionedThroughputExceededException") if lists == 2 else None

    leases.fault = throttle_second_list

    async def sync(existing: frozenset[str]) -> int:
        fresh = {"s0", "s1"} - existing
        for key in sorted(fresh):
            await leases.create(key, "TRIM_HORIZON", frozenset())
        return len(fresh)

    boss = leader(leases, members, sync_shards=sync, incarnation=lambda: "i1")
    await beat(members, "w1")
    with pytest.raises(Exception, match="ProvisionedThroughputExceeded"):
        await boss.step()
    await asyncio.sleep(0.5)
    await boss.step()
    assert members["w1"].grants == frozenset({"s0", "s1"})


async def test_a_lease_assigned_to_a_member_that_left_meanwhile_is_not_left_naming_it() -> None:
    """The round read w2 as live, then w2 beat its last (leaving) before the grant: nobody
    will take the lease. The grant is refused and the lease released, not left naming a
    worker that has gone — a fleet that stops altogether leaves nothing owned (CI: the demo's
    "leases still owned after shutdown"); a live member gets it next round."""
    leases, members = LeaseTable([lease("a"), lease("b", "w1")]), MemberTable()
    await beat(members, "w1", "w2")
    boss = leader(leases, members)
    await boss.step()
    await beat(members, "w1", "w2")
    leases.latency["assign"] = 1.0
    round_under_way = asyncio.create_task(boss.step())
    await asyncio.sleep(0.5)
    await members.beat("w2", Beat("i1", leaving=True))
    await round_under_way
    assert "a" not in members["w2"].grants
    assert leases["a"].owner is None, "left naming a worker that has gone"
    leases.latency["assign"] = 0.0
    await asyncio.sleep(1.0)
    await boss.step()
    reassigned = leases["a"]
    assert reassigned.owner == "w1" and "a" in members["w1"].grants


async def test_a_grant_whose_write_failed_is_granted_in_a_later_round() -> None:
    """The lease write named w2, then the grant's write failed (throttled past botocore's
    retries): w2 never hears of it, and the lease names a live member, so no plan moves it.
    Unless a later round grants it, nobody consumes the shard."""
    leases, members = LeaseTable([lease("a"), lease("b", "w1")]), MemberTable()
    await beat(members, "w1", "w2")
    boss = leader(leases, members)
    await boss.step()
    await beat(members, "w1", "w2")
    members.fault = lambda op, key: client_error("ThrottlingException") if op == "grant" else None
    with contextlib.suppress(ClientError):  # (run() logs it: leader_round_failed)
        await boss.step()
    assert leases["a"].owner == "w2" and "a" not in members["w2"].grants
    members.fault = lambda op, key: None
    for _ in range(10):
        await asyncio.sleep(1.0)
        await beat(members, "w1", "w2")
        await boss.step()
    assert "a" in members["w2"].grants or leases["a"].owner != "w2", "stranded"


async def test_an_assignment_that_landed_but_raised_is_granted_all_the_same() -> None:
    """The lease write landed and its answer never came (a read timeout past botocore's
    retries): the leader does not know it names w2, and a later plan sees a lease a live
    member holds. The grant goes out anyway: w2 reads the lease before it takes it."""
    leases, members = LeaseTable([lease("a"), lease("b", "w1")]), MemberTable()
    await beat(members, "w1", "w2")
    boss = leader(leases, members)
    await boss.step()
    await beat(members, "w1", "w2")
    assign = leases.assign

    async def landed_then_timed_out(*args: Any, **kwargs: Any) -> Lease | None:
        await assign(*args, **kwargs)
        raise ReadTimeoutError(endpoint_url="http://dynamodb")

    leases.assign = landed_then_timed_out  # type: ignore[method-assign]
    await boss.step()
    leases.assign = assign  # type: ignore[method-assign]
    for _ in range(3):
        await asyncio.sleep(1.0)
        await beat(members, "w1", "w2")
        await boss.step()
    assert leases["a"].owner == "w2"
    assert "a" in members["w2"].grants, "stranded"
