"""A lease this worker holds: the one place its counter is advanced.

Renewals and checkpoints both increment ``leaseCounter``; a per-lease lock serialises them so
each write is conditioned on the counter the previous one produced. ``renewed_at`` is the
monotonic time a successful write was *sent*: a peer can only start counting expiry after it
saw that write, so ``renewed_at + duration - margin`` is safely before any peer may take over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from consumer.lease.model import Lease
from consumer.lease.repository import LeaseRepository


class HeldLease:
    def __init__(
        self,
        lease: Lease,
        repository: LeaseRepository,
        *,
        acquired_at: float,
        duration: float,
        margin: float,
        clock: Callable[[], float],
    ) -> None:
        self.lease = lease
        self.renewed_at = acquired_at
        self.lost = False
        self._repository = repository
        self._duration = duration
        self._margin = margin
        self._clock = clock
        self._lock = asyncio.Lock()

    @property
    def key(self) -> str:
        return self.lease.key

    def valid(self, now: float | None = None) -> bool:
        """Still safe to process and checkpoint (self-fencing, DESIGN §3.3)."""
        now = self._clock() if now is None else now
        return not self.lost and now < self.renewed_at + self._duration - self._margin

    async def renew(self) -> bool:
        return await self._write(self._repository.renew)

    async def checkpoint(
        self, position: str, sub_sequence: int = 0, millis_behind: int | None = None
    ) -> bool:
        async def write(lease: Lease) -> Lease | None:
            return await self._repository.checkpoint(lease, position, sub_sequence, millis_behind)

        return await self._write(write)

    async def release(self) -> bool:
        released = await self._write(self._repository.release)
        self.lost = True  # released: nothing more may be written under this lease
        return released

    async def _write(self, operation: Callable[[Lease], Awaitable[Lease | None]]) -> bool:
        async with self._lock:
            sent_at = self._clock()
            if not self.valid(sent_at):
                self.lost = True
                return False
            result = await operation(self.lease)
            if result is None:
                self.lost = True
                return False
            self.lease = result
            self.renewed_at = sent_at
            return True
