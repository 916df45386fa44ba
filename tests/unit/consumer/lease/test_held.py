"""HeldLease and Liveness: self-fencing by the worker's beats (DESIGN §3.3), counter chaining,
renewed_at = the time a beat was SENT, recovery from writes whose answer was lost."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable

import pytest

from consumer.lease.held import HeldLease, Liveness
from consumer.lease.model import Lease
from consumer.testing import ANSWER_LOST, FakeClock, LeaseTable, lease

DURATION = 10.0
MARGIN = 1.0


class FakeRepository:
    """In-memory lease table of one item; writes are conditional on the counter."""

    def __init__(self, clock: FakeClock, current: Lease, latency: float = 0.0) -> None:
        self.clock = clock
        self.current = current
        self.latency = latency  # fake seconds each write takes, to tell sent from answered
        self.refuse = False
        self.calls: list[tuple[str, int, float]] = []  # (operation, counter sent, sent at)
        self.in_flight = 0
        self.peak = 0

    async def _write(self, op: str, seen: Lease, **changes: object) -> Lease | None:
        self.calls.append((op, seen.counter, self.clock()))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0)
        self.clock.advance(self.latency)
        self.in_flight -= 1
        if self.refuse or seen.counter != self.current.counter:
            return None
        self.current = dataclasses.replace(seen, counter=seen.counter + 1, **changes)  # type: ignore[arg-type]
        return self.current

    async def get(self, key: str) -> Lease | None:
        return self.current

    async def checkpoint(
        self,
        seen: Lease,
        position: str,
        sub_sequence: int,
        millis_behind: int | None = None,
        children: frozenset[str] = frozenset(),
    ) -> Lease | None:
        return await self._write(
            "checkpoint",
            seen,
            checkpoint=position,
            sub_sequence=sub_sequence,
            millis_behind=millis_behind,
        )

    async def release(self, seen: Lease) -> Lease | None:
        return await self._write("release", seen, owner=None)


def held_lease(latency: float = 0.0) -> tuple[HeldLease, FakeRepository, FakeClock]:
    """A lease held by a worker whose last answered beat was sent at 1000.0."""
    clock = FakeClock(start=1000.0)
    start = lease("shard-1", owner="me", counter=5)
    repository = FakeRepository(clock, start, latency)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    liveness.renewed(clock())
    held = HeldLease(start, repository, liveness=liveness, clock=clock)  # type: ignore[arg-type]
    return held, repository, clock


# --- Liveness -------------------------------------------------------------------------------


def test_liveness_is_not_valid_before_any_beat_was_answered() -> None:
    clock = FakeClock(start=1000.0)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    assert liveness.renewed_at == -math.inf
    assert not liveness.valid()
    assert not liveness.valid(-1e12)


@pytest.mark.parametrize(
    ("offset", "valid"),
    [
        pytest.param(0.0, True, id="at-the-send"),
        pytest.param(DURATION - MARGIN - 0.001, True, id="just-before-boundary"),
        pytest.param(DURATION - MARGIN, False, id="at-boundary"),
        pytest.param(DURATION, False, id="at-expiry"),
    ],
)
def test_liveness_boundary(offset: float, valid: bool) -> None:
    clock = FakeClock(start=1000.0)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    liveness.renewed(1000.0)
    assert liveness.valid(1000.0 + offset) is valid
    clock.advance(offset)
    assert liveness.valid() is valid  # the clock is read when no time is given


def test_liveness_counts_from_when_the_beat_was_sent_not_answered() -> None:
    """A beat sent at 1002 and answered at 1005 keeps us alive until 1002 + 10 - 1."""
    clock = FakeClock(start=1002.0)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    sent_at = clock()
    clock.advance(3.0)  # the answer comes
    liveness.renewed(sent_at)
    assert liveness.renewed_at == 1002.0
    assert liveness.valid(1002.0 + DURATION - MARGIN - 0.001)
    assert not liveness.valid(1002.0 + DURATION - MARGIN)


def test_liveness_never_moves_back_for_an_older_beat_answered_late() -> None:
    clock = FakeClock(start=1000.0)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    liveness.renewed(1005.0)
    liveness.renewed(1001.0)  # an earlier beat whose answer came after the later one's
    assert liveness.renewed_at == 1005.0


def test_one_liveness_keeps_every_lease_the_worker_holds() -> None:
    clock = FakeClock(start=1000.0)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    repository = FakeRepository(clock, lease("a", owner="me"))
    first, second = (
        HeldLease(lease(key, owner="me"), repository, liveness=liveness, clock=clock)  # type: ignore[arg-type]
        for key in ("a", "b")
    )
    liveness.renewed(clock())
    clock.advance(DURATION - MARGIN - 0.5)
    liveness.renewed(clock())  # one beat answered in time keeps both
    clock.advance(DURATION - MARGIN - 0.5)
    assert first.valid() and second.valid()
    clock.advance(0.5)
    assert not first.valid() and not second.valid()


def test_a_lapse_is_latched_until_the_worker_restarts_its_incarnation() -> None:
    """A beat answered after the bound passed must not revive leases the leader may already
    have reassigned, even when nobody looked at the clock in between."""
    clock = FakeClock(start=1000.0)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    liveness.renewed(clock())
    clock.advance(DURATION - MARGIN + 1.0)
    liveness.renewed(clock())  # sent after the bound: nobody called valid() meanwhile
    assert liveness.lapsed and not liveness.valid()
    liveness.restart(None)
    assert not liveness.valid()  # until the next answered beat
    liveness.renewed(clock())
    assert liveness.valid()


def test_leadership_bounds_the_liveness_and_its_loss_lapses_it_at_once() -> None:
    clock = FakeClock(start=1000.0)
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    liveness.renewed(clock())
    liveness.led(clock())
    clock.advance(DURATION - MARGIN - 1.0)
    liveness.renewed(clock())  # beats go on, leadership renewals do not
    clock.advance(1.0)
    assert not liveness.valid()
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=clock)
    liveness.renewed(clock())
    liveness.led(clock())
    liveness.lapse()  # leadership taken over
    assert not liveness.valid()


# --- HeldLease ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "valid"),
    [
        pytest.param(0.0, True, id="at-the-beat"),
        pytest.param(DURATION - MARGIN - 0.001, True, id="just-before-boundary"),
        pytest.param(DURATION - MARGIN, False, id="at-boundary"),
        pytest.param(DURATION, False, id="at-expiry"),
    ],
)
def test_valid_boundary(offset: float, valid: bool) -> None:
    held, _, clock = held_lease()
    assert held.valid(1000.0 + offset) is valid
    clock.advance(offset)
    assert held.valid() is valid  # the clock is read when no time is given


def test_key() -> None:
    held, _, _ = held_lease()
    assert held.key == "shard-1"


def test_a_lost_lease_is_invalid_whatever_the_beats() -> None:
    held, _, clock = held_lease()
    held.lost = True
    held.liveness.renewed(clock())
    assert not held.valid()


async def test_a_checkpoint_does_not_extend_validity_only_beats_do() -> None:
    held, _, clock = held_lease()
    clock.advance(5.0)
    assert await held.checkpoint("100") is True
    assert held.liveness.renewed_at == 1000.0
    assert not held.valid(1000.0 + DURATION - MARGIN)


async def test_refused_write_marks_lost_and_nothing_more_is_sent() -> None:
    held, repository, _ = held_lease()
    repository.refuse = True
    assert await held.checkpoint("100") is False
    assert held.lost is True
    assert held.valid(1000.0) is False
    repository.refuse = False
    assert await held.checkpoint("123") is False
    assert await held.release() is False
    assert [op for op, _, _ in repository.calls] == ["checkpoint"]
    assert held.lease.counter == 5


async def test_peer_took_the_lease_counter_mismatch() -> None:
    held, repository, _ = held_lease()
    repository.current = dataclasses.replace(repository.current, owner="peer", counter=9)
    assert await held.checkpoint("123") is False
    assert held.lost
    assert repository.current.owner == "peer"


async def test_no_write_once_invalid_self_fencing() -> None:
    held, repository, clock = held_lease()
    clock.advance(DURATION - MARGIN)
    assert await held.checkpoint("999") is False
    assert held.lost is True
    assert repository.calls == []
    assert repository.current.checkpoint == "TRIM_HORIZON"


async def test_no_release_once_invalid_self_fencing() -> None:
    held, repository, clock = held_lease()
    clock.advance(DURATION - MARGIN)
    assert await held.release() is False
    assert held.lost is True
    assert repository.calls == []
    assert repository.current.owner == "me"


async def test_checkpoint_writes_position_and_chains_counters() -> None:
    held, repository, clock = held_lease()
    assert await held.checkpoint("100", 2) is True
    clock.advance(1.0)
    assert await held.checkpoint("150", 1, millis_behind=40) is True
    clock.advance(1.0)
    assert await held.checkpoint("200") is True
    assert [(op, counter) for op, counter, _ in repository.calls] == [
        ("checkpoint", 5),
        ("checkpoint", 6),
        ("checkpoint", 7),
    ]
    assert (held.lease.checkpoint, held.lease.sub_sequence, held.lease.counter) == ("200", 0, 8)
    assert repository.current == held.lease


async def test_concurrent_writes_are_serialised() -> None:
    held, repository, _ = held_lease(latency=1.0)
    results = await asyncio.gather(
        held.checkpoint("10"), held.checkpoint("50"), held.checkpoint("90")
    )
    assert list(results) == [True, True, True]
    assert repository.peak == 1
    assert [counter for _, counter, _ in repository.calls] == [5, 6, 7]
    assert [sent for _, _, sent in repository.calls] == [1000.0, 1001.0, 1002.0]
    assert held.lease.counter == 8
    assert held.lease.checkpoint == "90"


async def test_release_waits_for_a_checkpoint_in_flight() -> None:
    held, repository, _ = held_lease(latency=1.0)
    results = await asyncio.gather(held.checkpoint("50"), held.release())
    assert list(results) == [True, True]
    assert [(op, counter) for op, counter, _ in repository.calls] == [
        ("checkpoint", 5),
        ("release", 6),
    ]
    assert (repository.current.checkpoint, repository.current.owner) == ("50", None)


async def test_release_clears_owner_and_ends_the_lease() -> None:
    held, repository, _ = held_lease()
    assert await held.release() is True
    assert repository.current.owner is None
    assert held.lost is True
    assert await held.checkpoint("100") is False
    assert [op for op, _, _ in repository.calls] == ["release"]


async def test_release_refused_is_reported() -> None:
    held, repository, _ = held_lease()
    repository.refuse = True
    assert await held.release() is False
    assert held.lost is True


@pytest.mark.parametrize("operation", ["checkpoint", "release"])
async def test_transport_error_propagates_without_losing_the_lease(operation: str) -> None:
    held, repository, clock = held_lease()

    async def broken(seen: Lease, *args: object, **kwargs: object) -> Lease | None:
        raise ConnectionError("network down")

    setattr(repository, operation, broken)
    clock.advance(2.0)
    write = {"checkpoint": lambda: held.checkpoint("100"), "release": held.release}[operation]
    with pytest.raises(ConnectionError):
        await write()
    assert held.lost is False, "a failure is not a refusal: the caller may try again"
    assert held.valid(1000.0 + DURATION - MARGIN - 0.001)
    assert not held.valid(1000.0 + DURATION - MARGIN)
    assert held.lease.counter == 5


# Issue 10, case 7: conditional writes that were applied but look lost. On a failed
# condition the lease is read again; the write is ours when the table names the owner we
# expect (or shows what our write wrote) with the counter our write produced. A write of ours
# that was abandoned but applied moves the counter too: the lease is still ours.


def held_on(
    table: LeaseTable, key: str = "s1", on_recovered: Callable[[str], None] = lambda op: None
) -> HeldLease:
    """A hold whose worker beat (answered) just now."""
    loop = asyncio.get_running_loop()
    liveness = Liveness(duration=DURATION, margin=MARGIN, clock=loop.time)
    liveness.renewed(loop.time())
    return HeldLease(
        table[key],
        table,
        liveness=liveness,
        clock=loop.time,
        on_recovered=on_recovered,
    )


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("operation", "owner_after"),
    [
        pytest.param("checkpoint", "me", id="checkpoint"),
        pytest.param("release", None, id="release"),
    ],
)
async def test_a_write_applied_whose_answer_was_lost_is_accepted(
    operation: str, owner_after: str | None
) -> None:
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    table.fault = lambda op, key: ANSWER_LOST if op == operation else None
    recovered: list[str] = []
    held = held_on(table, on_recovered=recovered.append)
    await asyncio.sleep(2.0)
    write = {"checkpoint": lambda: held.checkpoint("123", 0), "release": held.release}[operation]
    assert await write() is True
    assert recovered == [operation]
    assert table["s1"].counter == 6, "not written twice"
    assert table["s1"].owner == owner_after
    assert held.lease == table["s1"]
    if operation == "checkpoint":
        assert table["s1"].checkpoint == "123"
        assert not held.lost
    else:
        assert held.lost, "released: nothing more may be written"


@pytest.mark.looptime
@pytest.mark.parametrize("then", ["same-checkpoint", "later-checkpoint", "release"])
async def test_a_checkpoint_abandoned_but_applied_leaves_the_lease_ours(then: str) -> None:
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    table.answer_latency["checkpoint"] = 30.0  # applied at once, answered far too late
    held = held_on(table)
    await asyncio.sleep(3.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(held.checkpoint("50", 0), timeout=3.0)  # abandoned
    assert (table["s1"].checkpoint, table["s1"].counter) == ("50", 6)
    table.answer_latency.clear()
    await asyncio.sleep(1.0)
    if then == "same-checkpoint":
        # Sent again: its failed condition finds the table as this very write left it.
        assert await held.checkpoint("50", 0) is True
        assert (table["s1"].checkpoint, table["s1"].counter) == ("50", 6)
    elif then == "later-checkpoint":
        # The later checkpoint did not land: it is made again on top of counter 6, and lands.
        assert await held.checkpoint("77", 0) is True, "the lease is still ours"
        assert (table["s1"].checkpoint, table["s1"].counter) == ("77", 7)
    else:
        assert await held.release() is True
        assert (table["s1"].owner, table["s1"].counter) == (None, 7)
    assert held.lease == table["s1"]
    assert held.lost is (then == "release")


@pytest.mark.looptime
@pytest.mark.parametrize("operation", ["checkpoint", "release"])
async def test_a_failed_condition_with_a_peer_as_owner_is_a_lost_lease(operation: str) -> None:
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    held = held_on(table)
    table.items["s1"] = lease("s1", owner="peer", counter=6)
    write = {"checkpoint": lambda: held.checkpoint("123"), "release": held.release}[operation]
    assert await write() is False
    assert held.lost
    assert table["s1"].owner == "peer"


@pytest.mark.looptime
async def test_a_failed_condition_on_a_lease_that_moved_on_further_is_a_lost_lease() -> None:
    """Ours again, but two writes past ours: reassigned to us and written in between; not a
    write of ours that landed."""
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    held = held_on(table)
    table.items["s1"] = lease("s1", owner="me", counter=7)
    assert await held.checkpoint("123") is False
    assert held.lost
    assert table["s1"].counter == 7


@pytest.mark.looptime
async def test_a_failed_condition_on_a_deleted_lease_is_a_lost_lease() -> None:
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    held = held_on(table)
    del table.items["s1"]
    assert await held.checkpoint("123") is False
    assert held.lost
