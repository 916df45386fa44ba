"""The lease table in memory, for in-process tests of the concurrency core."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from consumer.lease.model import Lease

ANSWER_LOST = "answer_lost"  # a LeaseTable fault: the write is applied, the answer never comes


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseWrite:
    """One write the in-memory lease table applied, stamped with the event loop's time."""

    at: float
    op: str
    key: str
    lease: Lease | None  # the lease after the write (None: deleted)


class LeaseTable:
    """An in-memory lease table with the conditions of ``LeaseRepository``.

    Every operation first sleeps ``latency[op]`` seconds of event-loop time (run the test under
    ``looptime`` and nothing really waits), is applied, then answers after ``answer_latency[op]``
    more (a caller that gives up meanwhile abandons a write that was applied); a Scan answers
    with the table as it is when the Scan *completes*, so a write made during a slow Scan is in
    its answer. ``fault(op, key)``
    may return an exception to raise instead of applying the operation, or :data:`ANSWER_LOST`
    to apply it and then answer as botocore does when it retried a request whose first answer
    was lost: with a failed condition. Applied writes are logged in ``writes``.
    """

    def __init__(self, leases: Sequence[Lease] = ()) -> None:
        self.items: dict[str, Lease] = {lease.key: lease for lease in leases}
        self.latency: dict[str, float] = {}
        self.answer_latency: dict[str, float] = {}
        self.fault: Callable[[str, str], BaseException | str | None] = lambda op, key: None
        self.writes: list[LeaseWrite] = []
        self.calls: list[tuple[float, str, str]] = []  # (loop time sent, op, key)

    def __getitem__(self, key: str) -> Lease:
        return self.items[key]

    async def _enter(self, op: str, key: str) -> bool:
        """Log, wait, maybe fail; True when the answer is to be lost after applying."""
        loop = asyncio.get_running_loop()
        self.calls.append((loop.time(), op, key))
        delay = self.latency.get(op, 0.0)
        await asyncio.sleep(delay)
        outcome = self.fault(op, key)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome == ANSWER_LOST

    def _apply(self, op: str, key: str, before: Lease | None, after: Lease | None) -> None:
        current = self.items.get(key)
        if current != before:
            raise AssertionError("LeaseTable: unconditional write")  # pragma: no cover
        if after is None:
            self.items.pop(key, None)
        else:
            self.items[key] = after
        self.writes.append(LeaseWrite(asyncio.get_running_loop().time(), op, key, after))

    async def list(self) -> list[Lease]:
        await self._enter("list", "*")
        return list(self.items.values())

    async def get(self, key: str) -> Lease | None:
        await self._enter("get", key)
        return self.items.get(key)

    async def create(
        self,
        shard_id: str,
        checkpoint: str,
        parents: frozenset[str],
        hash_range: tuple[int, int] | None = None,
    ) -> bool:
        lose = await self._enter("create", shard_id)
        if shard_id in self.items:
            return False
        self._apply(
            "create",
            shard_id,
            None,
            Lease(shard_id, None, 0, checkpoint, parents=parents, hash_range=hash_range),
        )
        return not lose

    async def _update(self, op: str, seen: Lease, **changes: Any) -> Lease | None:
        """Conditional on the counter and the owner ``seen`` names, like the repository."""
        lose = await self._enter(op, seen.key)
        current = self.items.get(seen.key)
        if current is None or current.counter != seen.counter or current.owner != seen.owner:
            return None
        after = dataclasses.replace(current, counter=current.counter + 1, **changes)
        self._apply(op, seen.key, current, after)
        await asyncio.sleep(self.answer_latency.get(op, 0.0))
        return None if lose else after

    async def take(self, lease: Lease, me: str) -> Lease | None:
        switches = lease.owner_switches + (lease.owner != me)
        return await self._update(
            "take", lease, owner=me, owner_switches=switches, checkpoint_owner=None
        )

    async def renew(self, lease: Lease) -> Lease | None:
        if lease.owner is None:
            return None
        return await self._update("renew", lease)

    async def assign(
        self, key: str, to: str, *, owners: AbstractSet[str | None], counter: int | None = None
    ) -> Lease | None:
        lose = await self._enter("assign", key)
        current = self.items.get(key)
        if current is None or current.owner not in owners:
            return None
        if counter is not None and current.counter != counter:
            return None
        after = dataclasses.replace(
            current,
            owner=to,
            counter=current.counter + 1,
            owner_switches=current.owner_switches + 1,
            checkpoint_owner=None,
        )
        self._apply("assign", key, current, after)
        await asyncio.sleep(self.answer_latency.get("assign", 0.0))
        return None if lose else after

    async def checkpoint(
        self,
        lease: Lease,
        position: str,
        sub_sequence: int = 0,
        millis_behind: int | None = None,
        children: frozenset[str] = frozenset(),
    ) -> Lease | None:
        if lease.owner is None:
            return None
        changes: dict[str, Any] = {
            "checkpoint": position,
            "sub_sequence": sub_sequence,
            "owner_switches": 0,
        }
        if millis_behind is not None:
            changes["millis_behind"] = millis_behind
        if children:
            changes["children"] = children
        return await self._update("checkpoint", lease, **changes)

    async def release(self, lease: Lease) -> Lease | None:
        if lease.owner is None:
            return None
        return await self._update("release", lease, owner=None)

    async def delete_finished(self, lease: Lease) -> bool:
        lose = await self._enter("delete", lease.key)
        current = self.items.get(lease.key)
        if current is None or current.counter != lease.counter or not current.finished:
            return False
        self._apply("delete", lease.key, current, None)
        return not lose
