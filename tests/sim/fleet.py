"""Workers in the simulation, and what the observer records about them.

A worker is anything with ``start()``, ``kill()`` (SIGKILL: every task cancelled, nothing
written), ``terminate()`` (SIGTERM: checkpoint and release what it holds) and ``owned()`` (the
shards it considers itself the owner of and would process now). :class:`TelemaxWorker` runs the
**real** lease coordinator and held leases; the KCL 2.x model is in ``tests.sim.kcl``.

The :class:`Observer` is told whenever a worker's owned set may have changed. It keeps, per
shard, which workers own it, and records every moment two workers owned one shard at once
(must be never), how long each shard went without an owner after a kill or a stop, and the
time a fleet became balanced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Protocol

from consumer.config import Settings
from consumer.lease.coordinator import LeaseCoordinator
from consumer.lease.held import HeldLease
from consumer.lease.members import MemberStore
from consumer.lease.model import SHARD_END
from consumer.metrics import Metrics
from tests.sim.store import ChargedTable

CHECKPOINT_INTERVAL_S = 10.0  # a busy shard's checkpoints (telemax's default)


class SimWorker(Protocol):
    name: str

    def start(self) -> None: ...

    def kill(self) -> None: ...

    async def terminate(self) -> None: ...

    def owned(self) -> set[str]: ...


@dataclasses.dataclass
class Overlap:
    shard: str
    owners: frozenset[str]
    since: float
    until: float | None = None


class Observer:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.owners: defaultdict[str, set[str]] = defaultdict(set)  # shard -> workers
        self._owned_by: dict[str, set[str]] = {}  # worker -> shards
        self.overlaps: list[Overlap] = []
        self._open: dict[str, Overlap] = {}
        self.orphaned_since: dict[str, float] = {}  # shard -> when it lost its last owner
        # (when an owner came back, shard, seconds the shard had none)
        self.gaps: list[tuple[float, str, float]] = []
        self.arrivals: list[float] = []  # each time a shard gained an owner it did not have

    def changed(self, worker: SimWorker) -> None:
        now = self._clock()
        after = worker.owned()
        before = self._owned_by.get(worker.name, set())
        self._owned_by[worker.name] = after
        for shard in before - after:
            self.owners[shard].discard(worker.name)
            if not self.owners[shard]:
                self.orphaned_since[shard] = now
            self._check(shard, now)
        for shard in after - before:
            self.owners[shard].add(worker.name)
            self.arrivals.append(now)
            since = self.orphaned_since.pop(shard, None)
            if since is not None:
                self.gaps.append((now, shard, now - since))
            self._check(shard, now)

    def gone(self, worker: SimWorker) -> None:
        """A killed worker owns nothing from now on, whatever its memory says."""
        self._owned_by.setdefault(worker.name, set())
        stale = self._owned_by.pop(worker.name)
        now = self._clock()
        for shard in stale:
            self.owners[shard].discard(worker.name)
            if not self.owners[shard]:
                self.orphaned_since[shard] = now
            self._check(shard, now)

    def _check(self, shard: str, now: float) -> None:
        holders = self.owners[shard]
        current = self._open.get(shard)
        if len(holders) > 1 and current is None:
            self._open[shard] = Overlap(shard, frozenset(holders), now)
            self.overlaps.append(self._open[shard])
        elif len(holders) <= 1 and current is not None:
            current.until = now
            del self._open[shard]

    def counts(self, workers: Iterable[str]) -> list[int]:
        return [len(self._owned_by.get(name, ())) for name in workers]


async def create_children(table: ChargedTable, observer: Observer, key: str) -> frozenset[str]:
    """The reshard scenario: ``key`` was split in two; create the children's leases, as the
    worker that reads a parent to its end does, and date their wait from now."""
    parent = table.items[key]
    start, end = parent.hash_range or (0, 2**128 - 1)
    middle = (start + end) // 2
    halves = {f"{key}-0": (start, middle), f"{key}-1": (middle + 1, end)}
    now = asyncio.get_running_loop().time()
    for child, hash_range in halves.items():
        await table.create(child, "TRIM_HORIZON", frozenset({key}), hash_range)
        observer.orphaned_since.setdefault(child, now)  # a child waits from its parent's end
    return frozenset(halves)


class TelemaxWorker:
    """The real coordinator and leader; consumers are modelled as a checkpoint per owned
    shard per ``CHECKPOINT_INTERVAL_S``, through the real held lease, and a hand-back as a
    final checkpoint and a release."""

    def __init__(
        self,
        name: str,
        table: ChargedTable,
        observer: Observer,
        *,
        members: MemberStore,
        lease_duration_s: float,
        seed: int,
    ) -> None:
        self.name = name
        self._table = table
        self._observer = observer
        loop = asyncio.get_running_loop()
        self.coordinator = LeaseCoordinator(
            table,
            members,
            Settings(worker_id=name, lease_duration_s=lease_duration_s, metrics_port=0),
            Metrics("sim"),
            on_change=lambda: observer.changed(self),
            hand_back=self._hand_back,
            clock=loop.time,
        )
        self._rng = random.Random(seed)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._position = 0

    def start(self) -> None:
        c = self.coordinator
        self._tasks = [
            asyncio.create_task(c.run_beats()),
            asyncio.create_task(c.leader.run(self._stop)),
            asyncio.create_task(self._fence_and_observe()),
            asyncio.create_task(self._checkpoints()),
        ]

    def owned(self) -> set[str]:
        return set(self.coordinator.consumable())

    def kill(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._observer.gone(self)

    async def terminate(self) -> None:
        """SIGTERM: stop taking, checkpoint and release every lease, leave, then stop."""
        self.coordinator.taking = False
        held = list(self.coordinator.consumable().values())
        await asyncio.gather(*(lease.checkpoint(self._next_position()) for lease in held))
        await asyncio.gather(*(self.coordinator.release(lease.key, "shutdown") for lease in held))
        self._stop.set()
        await self.coordinator.leave()
        self.kill()

    def _hand_back(self, key: str) -> bool:
        """The consumer's graceful stop: a last checkpoint, then the release."""

        async def drain() -> None:
            held = self.coordinator.held.get(key)
            if held is not None and held.valid():
                await held.checkpoint(self._next_position())
            await self.coordinator.release(key, "handed_back")

        self._tasks.append(asyncio.create_task(drain()))
        return True

    async def _fence_and_observe(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            self.coordinator.fence()
            self._observer.changed(self)  # self-fencing by time changes what is owned

    async def _checkpoints(self) -> None:
        await asyncio.sleep(self._rng.uniform(0, CHECKPOINT_INTERVAL_S))
        while True:
            await asyncio.sleep(CHECKPOINT_INTERVAL_S)
            held = list(self.coordinator.consumable().values())
            results = await asyncio.gather(
                *(self._checkpoint(lease) for lease in held),
                return_exceptions=True,
            )
            if any(result is False for result in results):
                self._observer.changed(self)

    async def _checkpoint(self, held: HeldLease) -> bool:
        """A busy shard's checkpoint; a shard the reshard closed is read to its end instead:
        children created, SHARD_END, release, and the leader told (as the consumer does)."""
        if held.key not in self._table.closed:
            return await held.checkpoint(self._next_position())
        children = await create_children(self._table, self._observer, held.key)
        if not await held.checkpoint(SHARD_END, children=children):
            return False
        await self.coordinator.release(held.key, "shard_end")
        self.coordinator.note_shard_end()
        return True

    def _next_position(self) -> str:
        self._position += 1
        return f"{self._position:056d}"
