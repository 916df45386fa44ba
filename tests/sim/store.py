"""A lease table that charges capacity as DynamoDB does, for the simulation.

It is ``consumer.testing.LeaseTable`` (the repository's conditions, latency, faults) with
DynamoDB's bill on top:

- reads: 4 KB read units, half for eventually consistent reads; a Scan is charged per 1 MB
  page on the summed sizes of the items it read, a GetItem on the item's size;
- writes: 1 KB write units on the larger of the item before and after, charged also when the
  condition fails;
- partitions: items are spread over ``partitions`` by key hash; each partition has its own
  per-second limits (3,000 read units, 1,000 write units). With ``throttle`` on, a request that
  would take a partition over its limit in the current second is refused with
  ``ProvisionedThroughputExceededException`` (charged nothing), as DynamoDB does.

Item sizes are worked out from the attributes the repository writes (names plus values, as
DynamoDB counts them), without building the items.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import math
import zlib
from collections import defaultdict
from collections.abc import Sequence

from consumer.lease.model import Lease
from consumer.testing import LeaseTable, client_error

READ_UNIT = 4096
WRITE_UNIT = 1024
PAGE_BYTES = 1024 * 1024
PARTITION_READS_PER_S = 3000.0
PARTITION_WRITES_PER_S = 1000.0
WRITES = frozenset({"create", "take", "assign", "renew", "checkpoint", "release", "delete"})
TIMESTAMP_CHARS = len("2026-12-02T05:21:29.123Z")
NEW_LEASE_BYTES = 300


def number_size(value: int) -> int:
    """DynamoDB's size of a number: about one byte per two significant digits, plus one."""
    return len(str(abs(value))) // 2 + 2


def lease_size(lease: Lease) -> int:
    """Bytes DynamoDB counts for the lease item as the repository writes it."""
    size = len("leaseKey") + len(lease.key)
    size += len("leaseCounter") + number_size(lease.counter)
    size += len("checkpoint") + len(lease.checkpoint)
    size += len("checkpointSubSequenceNumber") + number_size(lease.sub_sequence)
    size += len("ownerSwitchesSinceCheckpoint") + number_size(lease.owner_switches)
    size += len("telemaxUpdatedAt") + TIMESTAMP_CHARS
    if lease.owner:
        size += len("leaseOwner") + len(lease.owner)
    if lease.parents:
        size += len("parentShardId") + sum(len(p) for p in lease.parents)
    if lease.children:
        size += len("childShardIds") + sum(len(c) for c in lease.children)
    if lease.millis_behind is not None:
        size += len("telemaxMillisBehind") + number_size(lease.millis_behind)
    if lease.hash_range is not None:
        start, end = lease.hash_range
        size += len("startingHashKey") + len(str(start)) + len("endingHashKey") + len(str(end))
    if lease.checkpoint_owner:
        size += len("checkpointOwner") + len(lease.checkpoint_owner)
    return size


@dataclasses.dataclass
class Usage:
    """Capacity charged, per second and partition, and per operation in all."""

    reads: defaultdict[tuple[int, int], float] = dataclasses.field(
        default_factory=lambda: defaultdict(float)
    )  # (second, partition) -> read units
    writes: defaultdict[tuple[int, int], float] = dataclasses.field(
        default_factory=lambda: defaultdict(float)
    )
    by_operation: defaultdict[str, float] = dataclasses.field(
        default_factory=lambda: defaultdict(float)
    )  # op -> units (read units for reads, write units for writes)
    requests: defaultdict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    throttled: defaultdict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))

    def window(self, start: float, end: float) -> Rates:
        """Mean and peak units per second in [start, end), the peak over partitions too."""
        seconds = range(math.floor(start), max(math.floor(start) + 1, math.floor(end)))
        return Rates(
            read_mean=_mean(self.reads, seconds),
            read_peak=_peak(self.reads, seconds, by_partition=False),
            read_partition_peak=_peak(self.reads, seconds, by_partition=True),
            write_mean=_mean(self.writes, seconds),
            write_peak=_peak(self.writes, seconds, by_partition=False),
            write_partition_peak=_peak(self.writes, seconds, by_partition=True),
        )


@dataclasses.dataclass(frozen=True)
class Rates:
    read_mean: float
    read_peak: float
    read_partition_peak: float
    write_mean: float
    write_peak: float
    write_partition_peak: float


def _per_second(units: dict[tuple[int, int], float], seconds: range) -> list[float]:
    totals: defaultdict[int, float] = defaultdict(float)
    for (second, _), value in units.items():
        if second in seconds:
            totals[second] += value
    return [totals[s] for s in seconds]


def _mean(units: dict[tuple[int, int], float], seconds: range) -> float:
    values = _per_second(units, seconds)
    return sum(values) / len(values) if values else 0.0


def _peak(units: dict[tuple[int, int], float], seconds: range, *, by_partition: bool) -> float:
    if by_partition:
        return max((v for (s, _), v in units.items() if s in seconds), default=0.0)
    return max(_per_second(units, seconds), default=0.0)


class ChargedTable(LeaseTable):
    def __init__(
        self, leases: Sequence[Lease] = (), *, partitions: int = 4, throttle: bool = False
    ) -> None:
        super().__init__(leases)
        self.partitions = partitions
        self.throttle = throttle
        self.usage = Usage()
        self.closed: set[str] = set()  # shards a reshard closed: their owners finish them
        self.log_writes = False  # the base class's per-write log: off, a run makes millions
        self._bytes: defaultdict[int, int] = defaultdict(int)  # partition -> item bytes
        self._sizes: dict[str, int] = {}  # key -> size of the item as it is now
        for lease in leases:
            self._sizes[lease.key] = lease_size(lease)
            self._bytes[self.partition_of(lease.key)] += self._sizes[lease.key]

    def partition_of(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.partitions

    def _apply(self, op: str, key: str, before: Lease | None, after: Lease | None) -> None:
        size = lease_size(after) if after else 0
        self._bytes[self.partition_of(key)] += size - self._sizes.get(key, 0)
        if after is None:
            self._sizes.pop(key, None)
        else:
            self._sizes[key] = size
        if self.log_writes:
            super()._apply(op, key, before, after)
        elif after is None:
            self.items.pop(key, None)
        else:
            self.items[key] = after

    async def _enter(self, op: str, key: str, charged_as: str | None = None) -> bool:
        """Wait ``latency[op]``, charge the request (as ``charged_as``), maybe fail it."""
        delay = self.latency.get(op, 0.0)
        if delay:
            await asyncio.sleep(delay)
        self._charge(charged_as or op, key)
        outcome = self.fault(op, key)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome == "answer_lost"

    async def scan(self, *, consistent: bool) -> builtins.list[Lease]:
        """A full Scan, strongly or eventually consistent (the KCL's is eventually)."""
        op = "scan" if consistent else "scan_eventual"
        return await self._read_all(op)

    async def list(self) -> builtins.list[Lease]:  # the repository's Scan: ConsistentRead
        return await self._read_all("list")

    async def _read_all(self, charged_as: str) -> builtins.list[Lease]:
        """Every lease, as a Scan: the latency and faults of "list", charged as asked."""
        await self._enter("list", "*", charged_as)
        return list(self.items.values())

    def _charge(self, op: str, key: str) -> None:
        now = asyncio.get_running_loop().time()
        second = math.floor(now)
        if op in ("list", "scan", "scan_eventual"):
            units = self._scan_units(eventual=op == "scan_eventual")
            self._admit(op, second, units, self.usage.reads, PARTITION_READS_PER_S)
        elif op == "get":
            units = {self.partition_of(key): _units(self._sizes.get(key, 1), READ_UNIT)}
            self._admit(op, second, units, self.usage.reads, PARTITION_READS_PER_S)
        elif op in WRITES:
            # The larger of before and after: a write that grows the item is charged on what
            # it becomes (a new lease item is about this size).
            size = max(self._sizes.get(key, 0), NEW_LEASE_BYTES)
            units = {self.partition_of(key): _units(size, WRITE_UNIT)}
            self._admit(op, second, units, self.usage.writes, PARTITION_WRITES_PER_S)

    def _scan_units(self, *, eventual: bool) -> dict[int, float]:
        """Read units of a full Scan by partition: each 1 MB page is charged on its bytes."""
        factor = 0.5 if eventual else 1.0
        units: dict[int, float] = {}
        for partition, size in self._bytes.items():
            if not size:
                continue
            pages, rest = divmod(size, PAGE_BYTES)
            whole = pages * (PAGE_BYTES // READ_UNIT)
            units[partition] = (whole + _units(rest, READ_UNIT)) * factor
        return units or {0: 0.5 * factor * 2}

    def _admit(
        self,
        op: str,
        second: int,
        units: dict[int, float],
        ledger: defaultdict[tuple[int, int], float],
        limit: float,
    ) -> None:
        if self.throttle and any(ledger[(second, p)] + u > limit for p, u in units.items()):
            self.usage.throttled[op] += 1
            raise client_error("ProvisionedThroughputExceededException", op=op)
        for partition, value in units.items():
            ledger[(second, partition)] += value
        self.usage.by_operation[op] += sum(units.values())
        self.usage.requests[op] += 1


def _units(size: int, unit: int) -> float:
    return float(max(1, math.ceil(size / unit)))
