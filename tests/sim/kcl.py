"""The KCL 2.x model: the Java KCL's lease taker and renewer with its defaults, on the same
store and clock as telemax, so that the two are compared side by side.

From amazon-kinesis-client (2.7.2, unchanged in 3.x's "lease count" mode): failover time 10 s;
the renewer renews every held lease every ``failover / 3 - 25 ms``; the taker runs every
``2 * (failover + 25 ms)`` (≈ 20 s): an eventually consistent full Scan, the time taken *after*
the Scan returns, a lease available when unowned or not renewed for ``failover`` on the taker's
clock; target ``ceil(leases / workers)`` with workers the owners of unexpired leases and itself;
it takes available leases up to its target, and only when none is available steals one lease
from the most loaded worker when that one is at or above the target (``chooseLeasesToSteal``).
Not modelled: the "very old lease" priority (leases not renewed for 3 x failover taken first).
A worker considers a lease its own while it renewed it within the failover time. Checkpoints:
the application's, here the same cadence as telemax's consumers (one per busy shard every
``CHECKPOINT_INTERVAL_S``), each a counter-conditioned update.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import Counter

from consumer.lease.model import SHARD_END, Lease
from tests.sim.fleet import CHECKPOINT_INTERVAL_S, Observer, create_children
from tests.sim.store import ChargedTable

EPSILON_S = 0.025
MAX_STEAL = 1


class KclWorker:
    def __init__(
        self,
        name: str,
        table: ChargedTable,
        observer: Observer,
        *,
        members: object = None,  # the KCL 2.x keeps everything in the lease table
        lease_duration_s: float,
        seed: int,
    ) -> None:
        self.name = name
        self._table = table
        self._observer = observer
        self._failover = lease_duration_s
        self._rng = random.Random(seed)
        self._clock = asyncio.get_running_loop().time
        self._held: dict[str, Lease] = {}
        self._renewed_at: dict[str, float] = {}
        self._seen: dict[str, tuple[int, float]] = {}  # key -> (counter, when it last changed)
        self._tasks: list[asyncio.Task[None]] = []
        self._position = 0
        self._taking = True
        self._locks: dict[str, asyncio.Lock] = {}

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._taker()),
            asyncio.create_task(self._renewer()),
            asyncio.create_task(self._checkpoints()),
        ]

    def owned(self) -> set[str]:
        now = self._clock()
        return {key for key, at in self._renewed_at.items() if now - at < self._failover}

    def kill(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._observer.gone(self)

    async def terminate(self) -> None:
        """The KCL's graceful shutdown: checkpoint, then evict (clear the owner)."""
        self._taking = False
        for key in list(self._held):
            if await self._write(key, "checkpoint") is not None:
                await self._write(key, "release")
        self.kill()

    async def _taker(self) -> None:
        while True:
            if self._taking:
                with contextlib.suppress(Exception):  # throttled: the next pass
                    await self._take_pass()
            await asyncio.sleep(2 * (self._failover + EPSILON_S))

    async def _take_pass(self) -> None:
        leases = await self._table.scan(consistent=False)
        now = self._clock()  # after the Scan returned, as the KCL does
        for lease in leases:
            before = self._seen.get(lease.key)
            if before is None or before[0] != lease.counter:
                self._seen[lease.key] = (lease.counter, now if lease.owner else 0.0)
        active = [lease for lease in leases if not lease.finished]

        def expired(lease: Lease) -> bool:
            return now - self._seen[lease.key][1] > self._failover

        available = [lease for lease in active if lease.owner is None or expired(lease)]
        counts: Counter[str] = Counter(
            lease.owner for lease in active if lease.owner is not None and not expired(lease)
        )
        counts.setdefault(self.name, 0)
        target = math.ceil(len(active) / len(counts)) if active else 0
        mine = counts[self.name]
        need = target - mine
        if need <= 0:
            return
        self._rng.shuffle(available)
        chosen = available[:need]
        if not chosen:
            chosen = self._steal(active, counts, target, need)
        for lease in chosen:
            taken = await self._table.take(lease, self.name)
            if taken is not None:
                self._hold(taken)

    def _steal(
        self, active: list[Lease], counts: Counter[str], target: int, needed: int
    ) -> list[Lease]:
        """The KCL's chooseLeasesToSteal: from the most loaded worker, when it is at or above
        the target; as many as it is over, or one when we need more than one."""
        victim, most = max(counts.items(), key=lambda item: item[1])
        if victim == self.name or most < target:
            return []
        count = min(needed, most - target)
        if needed > 1 and count == 0:
            count = 1
        count = min(count, MAX_STEAL)
        theirs = [lease for lease in active if lease.owner == victim]
        return self._rng.sample(theirs, min(count, len(theirs)))

    def _hold(self, lease: Lease) -> None:
        self._held[lease.key] = lease
        self._renewed_at[lease.key] = self._clock()
        self._observer.changed(self)

    def _drop(self, key: str) -> None:
        self._held.pop(key, None)
        self._renewed_at.pop(key, None)
        self._observer.changed(self)

    async def _renewer(self) -> None:
        while True:
            await asyncio.sleep(self._failover / 3 - EPSILON_S)
            for key in list(self._held):
                sent = self._clock()
                if await self._write(key, "renew") is not None:
                    self._renewed_at[key] = sent
            now = self._clock()
            for key in [k for k, at in self._renewed_at.items() if now - at >= self._failover]:
                self._drop(key)

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            for key in self.owned():
                if key in self._table.closed:
                    await self._finish(key)
                else:
                    await self._write(key, "checkpoint")

    async def _finish(self, key: str) -> None:
        """The KCL's shard end: child leases created, SHARD_END checkpointed, the lease
        dropped from the renewer (its cleanup manager deletes it later: not modelled)."""
        children = await create_children(self._table, self._observer, key)
        if await self._write(key, "shard_end", children) is not None:
            await self._write(key, "release")

    async def _write(
        self, key: str, operation: str, children: frozenset[str] = frozenset()
    ) -> Lease | None:
        """One counter-conditioned write to a held lease; writes to one lease take turns
        (the KCL synchronises its renewer and checkpointer on the lease)."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            lease = self._held.get(key)
            if lease is None:
                return None
            try:
                if operation == "renew":
                    result = await self._table.renew(lease)
                elif operation == "checkpoint":
                    self._position += 1
                    result = await self._table.checkpoint(lease, f"{self._position:056d}")
                elif operation == "shard_end":
                    result = await self._table.checkpoint(lease, SHARD_END, children=children)
                else:
                    result = await self._table.release(lease)
            except Exception:
                return None  # throttled: the renewer's clock decides
            if result is None:
                self._drop(key)  # lost to another worker
            elif operation == "release":
                self._drop(key)
            else:
                self._held[key] = result
            return result
