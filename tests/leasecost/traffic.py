"""What the proxy counted, per role and per second; how long leases take to move."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Iterable

from devkit.faultproxy import FaultProxy, TableTally
from devkit.local import WorkerProcess
from tests.leasecost.fleet import PROTOCOL, READS, WRITES, Fleet, LeaseView, wait_for
from tests.support import worker_events

# --- traffic --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Traffic:
    """The proxy's counts over ``seconds``, by table role."""

    tally: TableTally
    seconds: float
    roles: dict[str, str]  # table name -> "lease" | "members" | "records" | "dead-letter"

    def role(self, table: str) -> str:
        return self.roles.get(table, "other")

    def per_s(
        self, counter: Counter[tuple[str, str]], roles: Iterable[str], ops: Iterable[str]
    ) -> float:
        wanted, among = set(ops), set(roles)
        total = sum(n for (t, op), n in counter.items() if self.role(t) in among and op in wanted)
        return total / self.seconds

    # The lease protocol's tables: the lease table and telemax's membership table.
    def items_read_per_s(self, roles: Iterable[str] = PROTOCOL) -> float:
        return self.per_s(self.tally.items, roles, READS)

    def items_written_per_s(self, roles: Iterable[str] = PROTOCOL) -> float:
        return self.per_s(self.tally.items, roles, WRITES)

    def write_requests_per_s(self, roles: Iterable[str] = PROTOCOL) -> float:
        return self.per_s(self.tally.requests, roles, WRITES)

    def rows(self) -> list[TrafficRow]:
        """Per (role, operation), lease table first."""
        order = {"lease": 0, "members": 1, "records": 2, "dead-letter": 3, "other": 4}
        by_role: dict[tuple[str, str], TrafficRow] = {}
        for table, op in self.tally.requests:
            key = (self.role(table), op)
            row = by_role.setdefault(key, TrafficRow(*key))
            row.requests += self.tally.requests[(table, op)]
            row.refused += self.tally.refused[(table, op)]
            row.requests_per_s += self.tally.requests[(table, op)] / self.seconds
            row.items_per_s += self.tally.items[(table, op)] / self.seconds
            row.consistent_per_s += self.tally.consistent_items[(table, op)] / self.seconds
        return sorted(by_role.values(), key=lambda r: (order[r.role], r.operation))


@dataclasses.dataclass
class TrafficRow:
    role: str
    operation: str
    requests: int = 0
    refused: int = 0
    requests_per_s: float = 0.0
    items_per_s: float = 0.0
    consistent_per_s: float = 0.0


class Meter:
    """Takes the proxy's counts at the start of a phase; ``traffic()`` gives what followed."""

    def __init__(self, proxy: FaultProxy, roles: dict[str, str]) -> None:
        self._proxy = proxy
        self._roles = roles
        self._start = proxy.table_tally()
        self._started_at = time.monotonic()

    def traffic(self) -> Traffic:
        seconds = max(time.monotonic() - self._started_at, 1e-9)
        return Traffic(self._proxy.table_tally().since(self._start), seconds, self._roles)


def lease_rates(traffic: Traffic) -> str:
    return (
        f"lease + membership tables {traffic.items_read_per_s():.1f} items read/s, "
        f"{traffic.items_written_per_s():.1f} items written/s over {traffic.seconds:.1f} s"
    )


# --- fail-over and hand-over ------------------------------------------------------------------


@dataclasses.dataclass
class MoveWatch:
    """When each of ``shards`` is processed by a live worker after ``since`` (POSIX time):
    the earliest ``shard_processing`` log event of a live worker for it, or the first poll
    where its checkpoint moved under a live owner. Done once every shard is processed and
    owned by a live worker."""

    shards: set[str]
    since: float
    processed_at: dict[str, float] = dataclasses.field(default_factory=dict)
    evidence: dict[str, str] = dataclasses.field(default_factory=dict)
    first_seen: dict[str, LeaseView] = dataclasses.field(default_factory=dict)

    def done(self, fleet: Fleet) -> bool:
        live = fleet.live_ids()
        views = fleet.views()
        self._from_checkpoints(views, live, time.time())
        self._from_logs(fleet.live())
        return set(self.processed_at) >= self.shards and all(
            s in views and views[s].owner in live for s in self.shards
        )

    def _from_checkpoints(self, views: dict[str, LeaseView], live: set[str], now: float) -> None:
        for shard in self.shards - set(self.processed_at):
            view = views.get(shard, LeaseView(None, None))
            seen = self.first_seen.get(shard)
            if view.owner not in live:
                self.first_seen.pop(shard, None)
            elif seen is None or seen.owner != view.owner:
                self.first_seen[shard] = view
            elif seen.checkpoint != view.checkpoint:
                self._processed(shard, now, "checkpoint")

    def _from_logs(self, live: list[WorkerProcess]) -> None:
        for event in worker_events(*live):
            shard = str(event.fields.get("shard_id"))
            if event.name == "shard_processing" and event.at >= self.since and shard in self.shards:
                self._processed(shard, event.at, "log")

    def _processed(self, shard: str, at: float, evidence: str) -> None:
        if at < self.processed_at.get(shard, math.inf):
            self.processed_at[shard] = at
            self.evidence[shard] = evidence

    def seconds(self) -> float:
        return max(self.processed_at[s] for s in self.shards) - self.since

    def describe(self) -> str:
        kinds = Counter(self.evidence[s] for s in self.shards)
        return ", ".join(f"{n} by {kind}" for kind, n in sorted(kinds.items()))


def moved(fleet: Fleet, shards: set[str], since: float, timeout: float) -> tuple[float | None, str]:
    watch = MoveWatch(shards, since)
    if wait_for(lambda: watch.done(fleet), timeout) is None:
        return None, "not reached"
    return watch.seconds(), watch.describe()
