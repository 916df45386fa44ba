"""A lease this worker holds: the one place its counter is advanced.

Renewals and checkpoints both increment ``leaseCounter``; a per-lease lock serialises them so
each write is conditioned on the counter the previous one produced. ``renewed_at`` is the
monotonic time a successful write was *sent*: a peer can only start counting expiry after it
saw that write, so ``renewed_at + duration - margin`` is safely before any peer may take over.

A failed condition is not always a lost lease (DESIGN §3.1, the KCL's rule for renewals): a
write whose answer was lost and that botocore sent again fails its own condition, and a write
abandoned by its timeout may still have been applied. So on a failed condition the lease is
read again: if the table names the owner this write expects with the counter one past ours,
the write (or an abandoned one of ours) was applied and the lease is still ours. Its validity
then counts from the earliest write of ours that could have produced that counter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from consumer.lease.model import Lease, LeaseStore

# (the lease as we know it) -> the lease after the write, or None when the condition failed
Write = Callable[[Lease], Awaitable[Lease | None]]
# Did the write we meant to make land? (the lease as read again) -> bool
Landed = Callable[[Lease], bool]


class HeldLease:
    def __init__(
        self,
        lease: Lease,
        repository: LeaseStore,
        *,
        acquired_at: float,
        duration: float,
        margin: float,
        clock: Callable[[], float],
        on_recovered: Callable[[str], None] = lambda operation: None,
    ) -> None:
        self.lease = lease
        self.renewed_at = acquired_at
        self.lost = False
        self.releasing = False  # a release is under way: not renewed, not consumed
        self._repository = repository
        self._duration = duration
        self._margin = margin
        self._clock = clock
        self._on_recovered = on_recovered
        self._lock = asyncio.Lock()
        # When the first write conditioned on the current counter was sent without an answer
        # (timed out, cancelled, failed): it may have been applied.
        self._unanswered_since: float | None = None

    @property
    def key(self) -> str:
        return self.lease.key

    def valid(self, now: float | None = None) -> bool:
        """Still safe to process and checkpoint (self-fencing, DESIGN §3.3)."""
        now = self._clock() if now is None else now
        return not self.lost and now < self.renewed_at + self._duration - self._margin

    async def renew(self) -> bool:
        return await self._write("renew", self._repository.renew, self._ours)

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
            if self._unanswered_since is None:
                self._unanswered_since = sent_at
            result = await write(self.lease)
            if result is not None:
                self._answered(result, sent_at)
                return True
            return await self._after_failed_condition(operation, write, landed)

    async def _after_failed_condition(self, operation: str, write: Write, landed: Landed) -> bool:
        """Read the lease again: ours with the next counter means a write of ours landed."""
        since = self._unanswered_since
        assert since is not None
        current = await self._repository.get(self.key)
        produced_by_us = current is not None and current.counter == self.lease.counter + 1
        if current is None or not produced_by_us or not (self._ours(current) or landed(current)):
            self.lost = True
            return False
        self._on_recovered(operation)
        self._answered(current, since)
        if landed(current):
            return True
        # An abandoned write of ours (a renewal) landed, not this one: the lease is ours at
        # the new counter; make this write again on top of it, once.
        retry_sent_at = self._clock()
        if not self.valid(retry_sent_at):
            self.lost = True
            return False
        self._unanswered_since = retry_sent_at
        result = await write(self.lease)
        if result is None:
            self.lost = True
            return False
        self._answered(result, retry_sent_at)
        return True

    def _answered(self, lease: Lease, sent_at: float) -> None:
        self.lease = lease
        self.renewed_at = max(self.renewed_at, sent_at)
        self._unanswered_since = None
