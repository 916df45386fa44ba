"""One simulated fleet on virtual time: a table, workers of one model, and the scenarios.

Everything runs on one ``looptime`` event loop: sleeps, timeouts and latencies take no real
time, so minutes of a 1,000-shard fleet run in seconds. What costs real time is the code under
test itself (the planner's pass over every lease, every write), which is the point: it is
the real code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import statistics
from collections.abc import Callable

from consumer.lease.model import Lease
from consumer.testing import client_error
from tests.sim.fleet import Observer, SimWorker, TelemaxWorker
from tests.sim.kcl import KclWorker
from tests.sim.members import ChargedMembers
from tests.sim.store import ChargedTable, Rates

MODELS: dict[str, type[TelemaxWorker] | type[KclWorker]] = {
    "telemax": TelemaxWorker,
    "kcl": KclWorker,
}
MAX_HASH_KEY = 2**128 - 1


def shard_leases(count: int) -> list[Lease]:
    """``count`` root shards splitting the hash key space evenly, none leased yet."""
    width = (MAX_HASH_KEY + 1) // count
    return [
        Lease(
            f"shardId-{n:012d}",
            None,
            0,
            "TRIM_HORIZON",
            hash_range=(n * width, MAX_HASH_KEY if n == count - 1 else (n + 1) * width - 1),
        )
        for n in range(count)
    ]


@dataclasses.dataclass
class Outcome:
    """What one scenario measured for one model."""

    name: str
    rates: Rates | None = None
    gaps: list[float] = dataclasses.field(default_factory=list)  # seconds without an owner
    balanced_after: float | None = None  # None: not within the bound
    moves: int = 0
    overlaps: int = 0
    overlap_max: float = 0.0
    bound: float = 0.0

    @property
    def gap_p50(self) -> float | None:
        return statistics.median(self.gaps) if self.gaps else None

    @property
    def gap_max(self) -> float | None:
        return max(self.gaps) if self.gaps else None


class Fleet:
    def __init__(
        self,
        model: str,
        shards: int,
        *,
        lease_duration_s: float = 10.0,
        partitions: int = 4,
        seed: int = 1,
    ) -> None:
        self.model = model
        self.table = ChargedTable(shard_leases(shards), partitions=partitions)
        self.members = ChargedMembers(self.table.usage)
        self.clock = asyncio.get_running_loop().time
        self.observer = Observer(self.clock)
        self.workers: dict[str, SimWorker] = {}
        self._lease_duration_s = lease_duration_s
        self._rng = random.Random(seed)
        self._serial = 0

    def spawn(self) -> SimWorker:
        self._serial += 1
        name = f"{self.model}-w{self._serial:03d}"
        worker = MODELS[self.model](
            name,
            self.table,
            self.observer,
            members=self.members,
            lease_duration_s=self._lease_duration_s,
            seed=self._rng.randrange(2**32),
        )
        self.workers[name] = worker
        worker.start()
        return worker

    async def spawn_many(self, count: int, spread_s: float = 1.0) -> None:
        """Start ``count`` workers over ``spread_s`` seconds (pods never start together)."""
        for _ in range(count):
            self.spawn()
            await asyncio.sleep(self._rng.uniform(0, 2 * spread_s / max(1, count)))

    def kill(self, name: str) -> None:
        self.workers.pop(name).kill()

    async def terminate(self, name: str) -> None:
        await self.workers.pop(name).terminate()

    def balanced(self) -> bool:
        """Every active shard owned by exactly one worker, and counts within one of even."""
        active = sum(1 for lease in self.table.items.values() if not lease.finished)
        counts = self.observer.counts(self.workers)
        owned = sum(1 for holders in self.observer.owners.values() if len(holders) == 1)
        return owned == active and bool(counts) and max(counts) - min(counts) <= 1

    def resharding(self) -> bool:
        """A shard the reshard closed is not finished yet."""
        items = self.table.items
        return any(key in items and not items[key].finished for key in self.table.closed)

    async def until_balanced(self, bound: float) -> float | None:
        started = self.clock()
        while self.resharding() or not self.balanced():
            if self.clock() - started > bound:
                return None
            await asyncio.sleep(0.25)
        return self.clock() - started

    def outcome(
        self,
        name: str,
        since: float,
        *,
        balanced_after: float | None = None,
    ) -> Outcome:
        overlaps = [o for o in self.observer.overlaps if o.since >= since]
        durations = [(o.until if o.until is not None else self.clock()) - o.since for o in overlaps]
        return Outcome(
            name,
            rates=self.table.usage.window(since, self.clock()),
            gaps=[g for at, _, g in self.observer.gaps if at >= since],
            moves=sum(1 for at in self.observer.arrivals if at >= since),
            overlaps=len(overlaps),
            overlap_max=max(durations, default=0.0),
            balanced_after=balanced_after,
        )


def throttle_randomly(fleet: Fleet, share: float, rng: random.Random) -> None:
    """Refuse ``share`` of every request to the lease and membership tables with a
    throttling error (``share`` 0: stop)."""

    def fault(op: str, key: str) -> BaseException | None:
        if rng.random() < share:
            return client_error("ProvisionedThroughputExceededException", op=op)
        return None

    fleet.table.fault = fault
    fleet.members.fault = fault


Scenario = Callable[[Fleet], "asyncio.Future[Outcome]"]
