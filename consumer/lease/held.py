"""A lease this worker holds: the one place its counter is advanced.

Checkpoints increment ``leaseCounter``; a per-lease lock serialises them so each write is
conditioned on the counter the previous one produced. A lease is *valid* (safe to process and
checkpoint under) while the worker's :class:`Liveness` is: the worker's beats, not per-lease
renewals, keep every lease it holds (DESIGN §3.3). ``renewed_at`` there is the monotonic time
a successful beat was *sent*: the leader can only start counting the worker gone after it saw
that beat, so ``renewed_at + duration - margin`` is safely before anyone may reassign a lease.

A failed condition is not always a lost lease (DESIGN §3.1): a write whose answer was lost and
that botocore sent again fails its own condition, and a write abandoned by its timeout may
still have been applied. So on a failed condition the lease is read again: if the table names
the owner this write expects with the counter one past ours, a write of ours was applied and
the lease is still ours.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from consumer.lease.model import Lease, LeaseStore

# (the lease as we know it) -> the lease after the write, or None when the condition failed
Write = Callable[[Lease], Awaitable[Lease | None]]
# Did the write we meant to make land? (the lease as read again) -> bool
Landed = Callable[[Lease], bool]


class Liveness:
    """The worker's own view of whether it is still alive to the leader (self-fencing).

    While the worker leads, its leases are also bound by its leadership (``leading_since``:
    when the last leadership renewal that was answered was sent): a successor that takes over
    from a leader whose renewals stopped may reassign that leader's leases at once.

    Once the bound has passed, validity is *latched* off (``lapsed``) until the coordinator
    has dropped every lease and started a new incarnation (:meth:`restart`): a beat answered
    after the bound passed must not revive leases the leader may already have reassigned,
    even if nobody looked at the clock in between.
    """

    def __init__(self, *, duration: float, margin: float, clock: Callable[[], float]) -> None:
        self.renewed_at = -math.inf  # when the last beat that was answered was sent
        self.leading_since: float | None = None
        self.lapsed = False
        self._fresh = True  # no beat answered since the start (or the last restart)
        self._restarted_at = -math.inf
        self._duration = duration
        self._margin = margin
        self._clock = clock

    def _bound(self) -> float:
        since = self.renewed_at
        if self.leading_since is not None:
            since = min(since, self.leading_since)
        return since + self._duration - self._margin

    def renewed(self, sent_at: float) -> None:
        if self._fresh:
            if sent_at >= self._restarted_at:  # not a beat sent before the restart
                self._fresh, self.renewed_at = False, sent_at
            return
        if sent_at >= self._bound():
            self.lapsed = True  # sent after our validity had ended
        self.renewed_at = max(self.renewed_at, sent_at)

    def led(self, sent_at: float) -> None:
        """A leadership claim or renewal answered (``sent_at``: when it was sent)."""
        if self.leading_since is None:
            self.leading_since = sent_at
            return
        if not self._fresh and sent_at >= self._bound():
            self.lapsed = True
        self.leading_since = max(self.leading_since, sent_at)

    def lapse(self) -> None:
        """Off from now on (leadership lost to another): until :meth:`restart`."""
        self.lapsed = True

    def restart(self, leading_since: float | None) -> None:
        """Every lease dropped, a new incarnation: valid again from the next beat sent and
        answered from now on."""
        self.lapsed, self._fresh = False, True
        self._restarted_at = self._clock()
        self.leading_since = leading_since

    def valid(self, now: float | None = None) -> bool:
        if self._fresh:
            return False
        now = self._clock() if now is None else now
        if now >= self._bound():
            self.lapsed = True
        return not self.lapsed


class HeldLease:
    def __init__(
        self,
        lease: Lease,
        repository: LeaseStore,
        *,
        liveness: Liveness,
        clock: Callable[[], float],
        on_recovered: Callable[[str], None] = lambda operation: None,
    ) -> None:
        self.lease = lease
        self.liveness = liveness
        self.lost = False
        self.releasing = False  # a release is under way: not consumed
        self._repository = repository
        self._clock = clock
        self._on_recovered = on_recovered
        self._lock = asyncio.Lock()

    @property
    def key(self) -> str:
        return self.lease.key

    def valid(self, now: float | None = None) -> bool:
        """Still safe to process and checkpoint (self-fencing, DESIGN §3.3)."""
        return not self.lost and self.liveness.valid(now)

    async def checkpoint(
        self,
        position: str,
        sub_sequence: int = 0,
        millis_behind: int | None = None,
        children: frozenset[str] = frozenset(),
    ) -> bool:
        async def write(lease: Lease) -> Lease | None:
            return await self._repository.checkpoint(
                lease, position, sub_sequence, millis_behind, children
            )

        def landed(lease: Lease) -> bool:
            return self._ours(lease) and (lease.checkpoint, lease.sub_sequence) == (
                position,
                sub_sequence,
            )

        return await self._write("checkpoint", write, landed)

    async def release(self) -> bool:
        released = await self._write(
            "release", self._repository.release, lambda lease: lease.owner is None
        )
        self.lost = True  # released: nothing more may be written under this lease
        return released

    def _ours(self, lease: Lease) -> bool:
        return lease.owner == self.lease.owner

    async def _write(self, operation: str, write: Write, landed: Landed) -> bool:
        async with self._lock:
            sent_at = self._clock()
            if not self.valid(sent_at):
                self.lost = True
                return False
            result = await write(self.lease)
            if result is not None:
                self._answered(result)
                return True
            return await self._after_failed_condition(operation, write, landed)

    async def _after_failed_condition(self, operation: str, write: Write, landed: Landed) -> bool:
        """Read the lease again: ours with the next counter means a write of ours landed."""
        current = await self._repository.get(self.key)
        produced_by_us = current is not None and current.counter == self.lease.counter + 1
        if current is None or not produced_by_us or not (self._ours(current) or landed(current)):
            self.lost = True
            return False
        self._on_recovered(operation)
        self._answered(current)
        if landed(current):
            return True
        # An abandoned write of ours (an earlier checkpoint) landed, not this one: the lease
        # is ours at the new counter; make this write again on top of it, once.
        retry_sent_at = self._clock()
        if not self.valid(retry_sent_at):
            self.lost = True
            return False
        result = await write(self.lease)
        if result is None:
            self.lost = True
            return False
        self._answered(result)
        return True

    def _answered(self, lease: Lease) -> None:
        self.lease = lease
