"""The worker's side of the protocol: beats, grants, hand-backs, self-fencing (fake clock)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from consumer.config import Settings
from consumer.lease.coordinator import RELEASE_ATTEMPTS, LeaseCoordinator
from consumer.lease.leader import Leader
from consumer.lease.members import Beat
from consumer.lease.rounds import LEASE_SCAN_S
from consumer.metrics import Metrics
from consumer.testing import ANSWER_LOST, FakeClock, LeaseTable, MemberTable, client_error, lease

pytestmark = pytest.mark.looptime


def coordinator(
    leases: LeaseTable, members: MemberTable, clock: FakeClock, *, hand_back: bool = False
) -> LeaseCoordinator:
    return LeaseCoordinator(
        leases,
        members,
        Settings(worker_id="w1", metrics_port=0),
        Metrics("s"),
        on_change=lambda: None,
        hand_back=lambda key: hand_back,
        clock=clock,
    )


async def test_a_grant_names_us_and_we_start_on_the_lease() -> None:
    clock, leases, members = (
        FakeClock(),
        LeaseTable([lease("a", owner="w1", counter=3)]),
        MemberTable(),
    )
    c = coordinator(leases, members, clock)
    member = await c.beat()
    assert await members.grant(member, frozenset({"a"}))
    await c.beat()
    assert set(c.consumable()) == {"a"}
    assert c.held["a"].lease.counter == 3
    await c.beat()
    assert members["w1"].grants == frozenset()  # acknowledged


async def test_a_grant_for_a_lease_that_names_another_is_acknowledged_not_taken() -> None:
    clock, leases, members = FakeClock(), LeaseTable([lease("a", owner="w2")]), MemberTable()
    c = coordinator(leases, members, clock)
    await members.grant(await c.beat(), frozenset({"a"}))
    await c.beat()
    await c.beat()
    assert c.held == {} and members["w1"].grants == frozenset()


async def test_a_lease_granted_and_revoked_before_we_beat_is_never_started() -> None:
    """Both in one beat's answer: acknowledging the revoke and then starting on the grant
    would leave us consuming a lease the leader gives to another worker."""
    clock, leases, members = FakeClock(), LeaseTable([lease("a", owner="w1")]), MemberTable()
    c = coordinator(leases, members, clock)
    member = await c.beat()
    await members.grant(member, frozenset({"a"}))
    await members.revoke(member, frozenset({"a"}))
    await c.beat()
    assert c.held == {}
    await c.beat()
    assert (members["w1"].grants, members["w1"].revokes) == (frozenset(), frozenset())


async def test_a_revoked_lease_is_released_then_acknowledged() -> None:
    clock, leases, members = FakeClock(), LeaseTable([lease("a", owner="w1")]), MemberTable()
    c = coordinator(leases, members, clock)
    await members.grant(await c.beat(), frozenset({"a"}))
    member = await c.beat()
    await members.revoke(member, frozenset({"a"}))
    await c.beat()  # no consumer runs it: released at once
    assert leases["a"].owner is None and c.held == {}
    await c.beat()
    assert members["w1"].revokes == frozenset()


async def test_unanswered_beats_fence_every_lease_and_start_a_new_incarnation() -> None:
    clock, leases, members = FakeClock(), LeaseTable([lease("a", owner="w1")]), MemberTable()
    c = coordinator(leases, members, clock)
    await members.grant(await c.beat(), frozenset({"a"}))
    await c.beat()
    first = c.incarnation
    clock.advance(9.0 - 0.01)  # lease duration 10 s, margin 1 s
    c.fence()
    assert set(c.consumable()) == {"a"}
    clock.advance(0.02)
    c.fence()
    assert c.held == {} and c.incarnation != first
    member = await c.beat()
    assert member.incarnation == c.incarnation


async def test_the_first_beat_of_an_incarnation_drops_what_was_meant_for_the_last() -> None:
    clock, leases, members = FakeClock(), LeaseTable([lease("a", owner="w1")]), MemberTable()
    await members.beat("w1", Beat("old"))
    await members.grant(members["w1"], frozenset({"a"}))
    c = coordinator(leases, members, clock)
    await c.beat()
    assert c.held == {}


# --- ported from the take/renew coordinator's tests (test_coordinator.py) --------------------

DURATION = 10.0
MARGIN = Settings(lease_duration_s=DURATION).fence_margin_s


class Events:
    """What the coordinator reported to its consumers' supervisor: each change, with what it
    then held for consumers."""

    def __init__(self) -> None:
        self.coordinator: LeaseCoordinator | None = None
        self.seen: list[set[str]] = []

    def changed(self) -> None:  # the supervisor's single entry point (reconcile)
        assert self.coordinator is not None
        self.seen.append(set(self.coordinator.consumable()))


def on_loop(
    leases: LeaseTable,
    members: MemberTable,
    events: Events | None = None,
    *,
    me: str = "w1",
    hand_back: Callable[[str], bool] = lambda key: False,
) -> LeaseCoordinator:
    """A coordinator on the event loop's (virtual) clock."""
    events = events or Events()
    c = LeaseCoordinator(
        leases,
        members,
        Settings(worker_id=me, lease_duration_s=DURATION, metrics_port=0),
        Metrics("s"),
        on_change=events.changed,
        hand_back=hand_back,
        clock=asyncio.get_running_loop().time,
    )
    events.coordinator = c
    return c


async def holding(c: LeaseCoordinator, members: MemberTable, *keys: str) -> None:
    """Beat, be granted ``keys`` (their leases must name us), beat again to take them."""
    await members.grant(await c.beat(), frozenset(keys))
    await c.beat()
    assert set(c.consumable()) >= set(keys)


def throttled() -> BaseException:
    return client_error("ProvisionedThroughputExceededException")


async def stopped(*tasks: asyncio.Task[Any]) -> None:
    """Cancel background tasks and wait until they have ended."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_on_change_is_called_on_every_change_of_what_is_held() -> None:
    leases = LeaseTable([lease("a", "w1"), lease("b", "w1"), lease("c", "w1")])
    members, events = MemberTable(), Events()
    c = on_loop(leases, members, events)
    await holding(c, members, "a", "b", "c")
    assert events.seen == [{"a"}, {"a", "b"}, {"a", "b", "c"}]  # one call per lease taken
    await c.release("a", "requested")
    assert events.seen[-1] == {"b", "c"}
    assert await c.held["b"].checkpoint("9") is True
    leases.items["b"] = lease("b", "w2", counter=leases["b"].counter + 1)  # b moved on
    assert await c.held["b"].checkpoint("10") is False
    c.fence()
    assert events.seen[-1] == {"c"}
    await asyncio.sleep(DURATION)  # no beat answered for a lease duration: fenced
    c.fence()
    assert events.seen[-1] == set()
    assert len(events.seen) == 6


async def test_a_release_holds_the_lease_releasing_until_it_ends() -> None:
    leases, members, events = LeaseTable([lease("a", "w1")]), MemberTable(), Events()
    c = on_loop(leases, members, events)
    await holding(c, members, "a")
    leases.latency["release"] = 1.0
    release = asyncio.create_task(c.release("a", "shard_end"))
    await asyncio.sleep(0.5)
    assert c.held["a"].releasing
    assert "a" not in c.consumable(), "no consumer under a lease being released"
    await c.beat()  # beats go on meanwhile; a grant of the same lease again is no new hold
    await members.grant(members["w1"], frozenset({"a"}))
    await c.beat()
    assert c.held["a"].releasing and "a" not in c.consumable()
    await release
    assert "a" not in c.held
    assert leases["a"].owner is None
    assert [w.op for w in leases.writes] == ["release"]
    assert events.seen[-1] == set()


async def test_a_release_that_keeps_failing_gives_up_after_its_attempts() -> None:
    loop = asyncio.get_running_loop()
    leases, members, events = LeaseTable([lease("a", "w1")]), MemberTable(), Events()
    c = on_loop(leases, members, events)
    await holding(c, members, "a")
    changes = len(events.seen)
    leases.fault = lambda op, key: throttled() if op == "release" else None
    leases.latency["release"] = 0.5
    started = loop.time()
    release = asyncio.create_task(c.release("a", "shard_end"))
    await asyncio.sleep(0.25)
    assert c.held["a"].releasing
    await release
    assert [op for _, op, _ in leases.calls].count("release") == RELEASE_ATTEMPTS
    assert loop.time() - started < 5.0, "gives up within a few seconds"
    assert "a" not in c.held, "gave up: no longer held"
    assert leases["a"].owner == "w1", "still names us: reassigned once we are gone"
    assert len(events.seen) == changes + 1 and events.seen[-1] == set()


async def test_a_hand_back_whose_release_gave_up_is_still_acknowledged_and_reassigned() -> None:
    """The leader asks for one lease back; its release fails every attempt. The revoke is
    acknowledged all the same, and the leader's next assignment (conditional on the owner
    being us or nobody) moves it."""
    leases = LeaseTable([lease("a", "w1"), lease("b", "w1")])
    members = MemberTable()
    c = on_loop(leases, members)
    await holding(c, members, "a", "b")
    await members.beat("w2", Beat("i2"))
    boss = c.leader
    await boss.step()
    await c.beat()
    await members.beat("w2", Beat("i2"))  # the leader gives only to members it saw beat
    await boss.step()
    assert boss.leading()
    (asked,) = members["w1"].revokes  # one of two: the fair share of two workers
    (kept,) = {"a", "b"} - {asked}
    leases.fault = lambda op, key: throttled() if op == "release" else None
    await c.beat()  # no consumer runs it: released here, and it gives up
    assert [op for _, op, _ in leases.calls].count("release") == RELEASE_ATTEMPTS
    assert asked not in c.held and leases[asked].owner == "w1"
    await c.beat()
    assert members["w1"].revokes == frozenset(), "acknowledged"
    await members.beat("w2", Beat("i2"))
    await boss.step()
    assert leases[asked].owner == "w2" and asked in members["w2"].grants
    assert leases[kept].owner == "w1" and set(c.held) == {kept}


async def test_a_hand_back_with_a_consumer_waits_for_its_release() -> None:
    leases, members = LeaseTable([lease("a", "w1")]), MemberTable()
    asked: list[str] = []

    def hand_back(key: str) -> bool:
        asked.append(key)
        return True  # a consumer runs: it drains, checkpoints and releases

    c = on_loop(leases, members, hand_back=hand_back)
    await holding(c, members, "a")
    await members.revoke(members["w1"], frozenset({"a"}))
    await c.beat()
    await c.beat()
    assert asked == ["a"], "asked once, however many beats"
    assert members["w1"].revokes == frozenset({"a"}), "not acknowledged before the release"
    assert leases["a"].owner == "w1"
    await c.release("a", "requested")  # as the consumer does once it checkpointed
    await c.beat()
    assert members["w1"].revokes == frozenset()
    assert leases["a"].owner is None


@pytest.mark.parametrize("how", ["hang", "fail"])
async def test_beats_that_go_unanswered_fence_by_the_clock(how: str) -> None:
    """The fencing loop drops every lease a lease duration less the margin after the last
    answered beat was sent, whether the beats hang or fail; nothing is written after."""
    loop = asyncio.get_running_loop()
    leases, members, events = LeaseTable([lease("a", "w1")]), MemberTable(), Events()
    c = on_loop(leases, members, events)
    await holding(c, members, "a")
    beats = asyncio.create_task(c.run_beats())
    fencing = asyncio.create_task(c.run_fencing())
    try:
        await asyncio.sleep(3.0)
        was_ok = c.aws_ok
        if how == "hang":
            members.latency["beat"] = 1_000.0
        else:
            members.fault = lambda op, key: throttled() if op == "beat" else None
        incarnation = c.incarnation
        while "a" in c.held:
            assert loop.time() < c.liveness.renewed_at + DURATION, "not fenced in time"
            await asyncio.sleep(0.05)
        fenced_at = loop.time()
    finally:
        await stopped(beats, fencing)
    last_sent = c.liveness.renewed_at  # the last beat that was answered was sent then
    assert last_sent >= 2.0
    assert last_sent + DURATION - MARGIN <= fenced_at <= last_sent + DURATION - MARGIN + 0.3
    assert (was_ok, c.aws_ok) == (True, False)
    assert c.incarnation != incarnation, "beats on as a new worker that holds nothing"
    assert events.seen[-1] == set()
    assert [w.op for w in leases.writes] == []


async def test_a_hung_beat_does_not_delay_fencing() -> None:
    """One beat in flight for far longer than a lease duration: fencing runs on its own."""
    loop = asyncio.get_running_loop()
    leases, members = LeaseTable([lease("a", "w1")]), MemberTable()
    c = on_loop(leases, members)
    await holding(c, members, "a")
    members.latency["beat"] = 1_000.0
    last_sent = c.liveness.renewed_at
    hung = asyncio.create_task(c.beat())
    fencing = asyncio.create_task(c.run_fencing())
    try:
        while "a" in c.held:
            await asyncio.sleep(0.05)
        assert loop.time() <= last_sent + DURATION - MARGIN + 0.3
    finally:
        await stopped(hung, fencing)


async def test_a_lease_lost_by_a_refused_write_is_not_reported_as_not_beaten() -> None:
    """The lease moved on; our checkpoint was refused: a lost lease, not self-fencing."""
    leases, members = LeaseTable([lease("a", "w1"), lease("b", "w1")]), MemberTable()
    c = on_loop(leases, members)
    await holding(c, members, "a", "b")
    leases.items["a"] = lease("a", "w2", counter=leases["a"].counter + 1)
    incarnation = c.incarnation
    assert await c.held["a"].checkpoint("100") is False
    with structlog.testing.capture_logs() as logged:
        c.fence()
    assert [(e["event"], e["why"]) for e in logged] == [("lease_lost", "write_refused")]
    assert set(c.held) == {"b"}, "the others stay held"
    assert c.incarnation == incarnation, "still alive: no new incarnation"


@pytest.mark.parametrize("read_s", [0.0, 2.0, 4.0, 9.0, 15.0])
async def test_no_lease_is_reassigned_while_its_owner_still_considers_it_valid(
    read_s: float,
) -> None:
    """w2 holds a; its beats start failing just before the leader's (slow) read of the
    members completes. The leader dates what it read at the read's completion, so it never
    assigns a while w2 may still consume under it, and still assigns it soon after."""
    loop = asyncio.get_running_loop()
    leases, members = LeaseTable([lease("a", "w2")]), MemberTable()
    owner = on_loop(leases, members, me="w2")
    await holding(owner, members, "a")
    boss = Leader(
        leases,
        members,
        Settings(worker_id="w1", lease_duration_s=DURATION, metrics_port=0),
        Metrics("s"),
        clock=loop.time,
    )
    fails = False
    members.fault = lambda op, key: throttled() if fails and (op, key) == ("beat", "w2") else None

    async def w1_beats() -> None:
        while True:
            await members.beat("w1", Beat("i1"))
            await asyncio.sleep(1.0)

    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(coro)
        for coro in (w1_beats(), boss.run(stop), owner.run_beats(), owner.run_fencing())
    ]
    try:
        await asyncio.sleep(3.0)
        assert boss.leading() and leases["a"].owner == "w2"
        reads = [at for at, op, _ in members.calls if op == "members"]
        members.latency["members"] = read_s
        while len([at for at, op, _ in members.calls if op == "members"]) == len(reads):
            await asyncio.sleep(0.01)
        read_sent = max(at for at, op, _ in members.calls if op == "members")
        await asyncio.sleep(max(0.0, read_sent + read_s - 0.1 - loop.time()))
        fails = True  # w2's beats fail from now on: its last answered one is recent
        members.latency["members"] = 0.0  # the reads after this one are fast
        deadline = loop.time() + 4 * DURATION
        while leases["a"].owner != "w1":
            assert loop.time() < deadline, "never reassigned"
            await asyncio.sleep(0.1)
    finally:
        await stopped(*tasks)
    (assigned_at,) = [w.at for w in leases.writes if w.op == "assign" and w.key == "a"]
    valid_until = owner.liveness.renewed_at + DURATION - MARGIN
    assert assigned_at >= valid_until, f"assigned at {assigned_at:.2f}, valid to {valid_until}"
    assert not owner.liveness.valid(assigned_at)
    assert assigned_at <= owner.liveness.renewed_at + DURATION + read_s + 2.0


async def test_leave_beats_leaving_and_resigns_leadership() -> None:
    """A graceful stop: the lease released, a last beat says we left, the leader resigns
    after one last round, and what we held goes to another worker at once."""
    leases, members = LeaseTable([lease("a", "w1")]), MemberTable()
    c = on_loop(leases, members)
    await holding(c, members, "a")
    await members.beat("w2", Beat("i2"))
    await c.leader.step()
    assert c.leader.leading()
    await c.release("a", "shutdown")
    await members.beat("w2", Beat("i2"))
    await c.leave()
    assert members["w1"].leaving
    assert not c.leader.leading()
    assert members.leadership is not None and members.leadership.owner is None
    assert leases["a"].owner == "w2" and "a" in members["w2"].grants, "no expiry wait"


async def test_a_failed_leave_does_not_resign() -> None:
    """Not known to have left, we would count as live in a last round: leadership lapses
    on its own instead."""
    leases, members = LeaseTable(), MemberTable()
    c = on_loop(leases, members)
    await c.beat()
    await c.leader.step()
    assert c.leader.leading()
    members.fault = lambda op, key: throttled() if op == "beat" else None
    with structlog.testing.capture_logs() as logged:
        await c.leave()
    assert [e["event"] for e in logged] == ["leave_failed"]
    assert members.leadership is not None and members.leadership.owner == "w1"
    assert not members["w1"].leaving


async def test_a_grant_whose_lease_read_is_slower_than_a_beat_is_still_taken() -> None:
    leases, members = LeaseTable([lease("a", "w1")]), MemberTable()
    c = on_loop(leases, members)
    await members.grant(await c.beat(), frozenset({"a"}))
    leases.latency["get"] = 1.5  # a throttled GetItem that botocore retried
    beats = asyncio.create_task(c.run_beats())
    try:
        await asyncio.sleep(30.0)
    finally:
        await stopped(beats)
    assert "a" in c.held


async def test_a_lease_whose_assignment_answer_was_lost_is_still_granted() -> None:
    """The leader's assign landed but its answer did not: botocore sent it again and the
    retry failed its condition. The lease names us: unless the leader grants it, nobody
    consumes it (until a new leader is elected and grants what names each member)."""
    leases, members = LeaseTable(), MemberTable()
    c = on_loop(leases, members)
    runs = [asyncio.create_task(c.run_beats()), asyncio.create_task(c.leader.run(asyncio.Event()))]
    try:
        await asyncio.sleep(3.0)  # elected, its first round done
        assert c.leader.leading()
        leases.fault = lambda op, key: ANSWER_LOST if op == "assign" else None
        await leases.create("a", "TRIM_HORIZON", frozenset())  # a new shard's lease
        await asyncio.sleep(2 * LEASE_SCAN_S)  # the leader reads the table again meanwhile
    finally:
        await stopped(*runs)
    assert leases["a"].owner == "w1"
    assert "a" in c.held, "assigned to us and never granted: stranded"


async def test_a_lone_worker_consumes_its_shards_within_half_a_second_of_starting() -> None:
    """Cold start: the leader counts itself as beating (it is alive, and its item carries its
    own incarnation) instead of waiting a round to see its beat change, and a grant to itself
    wakes its own beat instead of waiting for the next: first records sooner after launch."""
    leases = LeaseTable([lease(key, owner=None) for key in ("a", "b", "c", "d")])
    members = MemberTable()
    c = on_loop(leases, members)
    loop = asyncio.get_running_loop()
    started = loop.time()
    runs = [asyncio.create_task(c.run_beats()), asyncio.create_task(c.leader.run(asyncio.Event()))]
    try:
        while set(c.consumable()) != {"a", "b", "c", "d"}:
            assert loop.time() - started < 10, "never took its shards"
            await asyncio.sleep(0.01)
        assert loop.time() - started <= 0.5
    finally:
        await stopped(*runs)


async def test_a_new_leader_does_not_take_every_free_lease_for_itself_first() -> None:
    """Its own beat counts at once only when no other member is still to be observed: in its
    first round after an election the other live members are not yet seen beating, and
    counting itself then would bring every free lease to it, to be handed back later."""
    leases = LeaseTable([lease(key, owner=None) for key in ("a", "b", "c", "d")])
    members = MemberTable()
    w1, w2 = on_loop(leases, members, me="w1"), on_loop(leases, members, me="w2")
    runs = [asyncio.create_task(w2.run_beats())]
    await asyncio.sleep(2.0)  # w2 is a live member before w1 starts and is elected
    runs += [
        asyncio.create_task(w1.run_beats()),
        asyncio.create_task(w1.leader.run(asyncio.Event())),
    ]
    try:
        await asyncio.sleep(10.0)
    finally:
        await stopped(*runs)
    assert len(w1.consumable()) == len(w2.consumable()) == 2
    assigned = [w for w in leases.writes if w.op == "assign"]
    assert len(assigned) == 4, "each lease assigned once: nothing handed back to rebalance"


async def test_a_member_warned_of_grants_beats_four_times_as_often_around_then_only() -> None:
    loop = asyncio.get_running_loop()
    leases, members = LeaseTable([lease("a", "w3")]), MemberTable()
    c = on_loop(leases, members, me="w2")
    beat = Settings(lease_duration_s=DURATION).beat_interval_s
    beats = asyncio.create_task(c.run_beats())
    try:
        await asyncio.sleep(2.3)
        warned_at = loop.time()
        assert await members.expect(members["w2"], 5.0)
        await asyncio.sleep(5.0 + 4 * beat)
    finally:
        await stopped(beats)
    sent = [at for at, op, key in members.calls if (op, key) == ("beat", "w2")]
    due = warned_at + 5.0
    around = [at for at in sent if due - beat / 2 <= at <= due + beat / 2]
    assert max(b - a for a, b in itertools.pairwise(around)) <= beat / 4 + 0.01
    calm = [at for at in sent if not due - 2 * beat <= at <= due + 2 * beat]
    gaps = [b - a for a, b in itertools.pairwise(calm) if b - a < 3 * beat]
    assert min(gaps) >= beat - 0.01, "a beat interval apart before and after"


async def test_a_grant_whose_read_outlasts_the_start_of_a_stop_is_declined_not_taken() -> None:
    """SIGTERM came while a grant's lease read was in flight: the stop's sweep has released
    what was held by then, so a lease taken after it would be left naming a worker that has
    gone (CI: the demo's "leases still owned after shutdown"). It is released instead."""
    leases, members = LeaseTable([lease("a", "w1")]), MemberTable()
    c = on_loop(leases, members)
    await members.grant(await c.beat(), frozenset({"a"}))
    leases.latency["get"] = 1.0
    beat = asyncio.create_task(c.beat())
    await asyncio.sleep(0.5)  # the read is under way
    c.taking = False  # the worker's _shutdown begins
    await beat
    assert c.held == {}
    assert leases["a"].owner is None, "left naming a worker that stops"
    await c.beat()
    assert members["w1"].grants == frozenset()  # acknowledged all the same
