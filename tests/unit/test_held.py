"""HeldLease: self-fencing (DESIGN §3.3), counter chaining, renewed_at = time SENT."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from consumer.lease.held import HeldLease
from consumer.lease.model import Lease
from consumer.testing import FakeClock, lease

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

    async def checkpoint(
        self, seen: Lease, position: str, sub_sequence: int, millis_behind: int | None = None
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
