"""HeldLease: self-fencing (DESIGN §3.3), counter chaining, renewed_at = time SENT."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from consumer.lease.held import HeldLease
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

    async def renew(self, seen: Lease) -> Lease | None:
        return await self._write("renew", seen)

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
    clock = FakeClock(start=1000.0)
    start = lease("shard-1", owner="me", counter=5)
    repository = FakeRepository(clock, start, latency)
    held = HeldLease(
        start,
        repository,  # type: ignore[arg-type]
        acquired_at=clock(),
        duration=DURATION,
        margin=MARGIN,
        clock=clock,
    )
    return held, repository, clock


@pytest.mark.parametrize(
    ("offset", "valid"),
    [
        pytest.param(0.0, True, id="at-acquisition"),
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


async def test_renew_advances_counter_and_validity() -> None:
    held, repository, clock = held_lease()
    clock.advance(5.0)
    assert await held.renew() is True
    assert held.lease.counter == 6
    assert held.renewed_at == 1005.0
    assert held.valid(1005.0 + DURATION - MARGIN - 0.001)
    assert not held.valid(1005.0 + DURATION - MARGIN)
    assert repository.calls == [("renew", 5, 1005.0)]


async def test_renewed_at_is_when_the_write_was_sent() -> None:
    held, _, clock = held_lease(latency=3.0)
    clock.advance(2.0)
    assert await held.renew() is True
    assert clock() == 1005.0  # the answer came 3 s after sending
    assert held.renewed_at == 1002.0
    assert not held.valid(1002.0 + DURATION - MARGIN)


async def test_refused_write_marks_lost_and_nothing_more_is_sent() -> None:
    held, repository, _ = held_lease()
    repository.refuse = True
    assert await held.renew() is False
    assert held.lost is True
    assert held.valid(1000.0) is False
    repository.refuse = False
    assert await held.checkpoint("123") is False
    assert await held.renew() is False
    assert [op for op, _, _ in repository.calls] == ["renew"]
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


async def test_checkpoint_writes_position_and_chains_counters() -> None:
    held, repository, clock = held_lease()
    assert await held.checkpoint("100", 2) is True
    clock.advance(1.0)
    assert await held.renew() is True
    clock.advance(1.0)
    assert await held.checkpoint("200") is True
    assert [(op, counter) for op, counter, _ in repository.calls] == [
        ("checkpoint", 5),
        ("renew", 6),
        ("checkpoint", 7),
    ]
    assert (held.lease.checkpoint, held.lease.sub_sequence, held.lease.counter) == ("200", 0, 8)
    assert repository.current == held.lease
    assert held.renewed_at == 1002.0


async def test_concurrent_writes_are_serialised() -> None:
    held, repository, _ = held_lease(latency=1.0)
    results = await asyncio.gather(held.renew(), held.checkpoint("50"), held.renew())
    assert results == [True, True, True]
    assert repository.peak == 1
    assert [counter for _, counter, _ in repository.calls] == [5, 6, 7]
    assert [sent for _, _, sent in repository.calls] == [1000.0, 1001.0, 1002.0]
    assert held.renewed_at == 1002.0  # the last write's send time, not its answer time
    assert held.lease.counter == 8


async def test_release_clears_owner_and_ends_the_lease() -> None:
    held, repository, _ = held_lease()
    assert await held.release() is True
    assert repository.current.owner is None
    assert held.lost is True
    assert await held.renew() is False
    assert [op for op, _, _ in repository.calls] == ["release"]


async def test_release_refused_is_reported() -> None:
    held, repository, _ = held_lease()
    repository.refuse = True
    assert await held.release() is False
    assert held.lost is True


async def test_transport_error_propagates_without_losing_the_lease() -> None:
    held, repository, clock = held_lease()

    async def broken(seen: Lease) -> Lease | None:
        raise ConnectionError("network down")

    repository.renew = broken  # type: ignore[method-assign]
    clock.advance(2.0)
    with pytest.raises(ConnectionError):
        await held.renew()
    assert held.lost is False
    assert held.renewed_at == 1000.0  # not renewed: validity still counts from before
    assert held.valid(1000.0 + DURATION - MARGIN - 0.001)
    assert not held.valid(1000.0 + DURATION - MARGIN)


# Issue 10, case 7: conditional writes that were applied but look lost. On a failed
# condition the lease is read again; the write is ours when the table names the owner we
# expect with the counter our write produced (the KCL's rule for renewals). A write of ours
# that was abandoned but applied moves the counter too: the lease is still ours, but its
# validity counts from when that earlier write was sent.


def held_on(table: LeaseTable, key: str = "s1") -> HeldLease:
    loop = asyncio.get_running_loop()
    return HeldLease(
        table[key],
        table,  # type: ignore[arg-type]
        acquired_at=loop.time(),
        duration=DURATION,
        margin=MARGIN,
        clock=loop.time,
    )


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("operation", "owner_after"),
    [
        pytest.param("renew", "me", id="renew"),
        pytest.param("checkpoint", "me", id="checkpoint"),
        pytest.param("release", None, id="release"),
    ],
)
async def test_a_write_applied_whose_answer_was_lost_is_accepted(
    operation: str, owner_after: str | None
) -> None:
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    table.fault = lambda op, key: ANSWER_LOST if op == operation else None
    held = held_on(table)
    await asyncio.sleep(2.0)
    write = {
        "renew": held.renew,
        "checkpoint": lambda: held.checkpoint("123", 0),
        "release": held.release,
    }[operation]
    assert await write() is True
    assert table["s1"].counter == 6
    assert table["s1"].owner == owner_after
    assert held.lease == table["s1"]
    if operation != "release":
        assert not held.lost
        assert held.renewed_at == 2.0


@pytest.mark.looptime
@pytest.mark.parametrize("then", ["renew", "checkpoint"])
async def test_a_renewal_abandoned_but_applied_leaves_the_lease_ours(then: str) -> None:
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    table.answer_latency["renew"] = 30.0  # applied at once, answered far too late
    held = held_on(table)
    await asyncio.sleep(3.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(held.renew(), timeout=3.0)  # as the renew pass abandons it
    assert table["s1"].counter == 6
    table.answer_latency.clear()
    await asyncio.sleep(1.0)  # t = 7
    if then == "renew":
        # The abandoned renewal is what renewed the lease: it counts from when it was sent
        # (3.0), since a peer may have seen counter 6 that early, not from now (7.0).
        assert await held.renew() is True
        assert (table["s1"].counter, held.renewed_at) == (6, 3.0)
    else:
        # The checkpoint did not land: it is made again on top of counter 6, and lands now.
        assert await held.checkpoint("77", 0) is True, "the lease is still ours"
        assert (table["s1"].checkpoint, table["s1"].counter) == ("77", 7)
        assert held.renewed_at == 7.0
    assert held.lease == table["s1"]
    assert not held.lost


@pytest.mark.looptime
async def test_a_failed_condition_with_a_peer_as_owner_is_a_lost_lease() -> None:
    table = LeaseTable([lease("s1", owner="me", counter=5)])
    held = held_on(table)
    table.items["s1"] = lease("s1", owner="peer", counter=6)
    assert await held.renew() is False
    assert held.lost
