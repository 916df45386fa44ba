"""Shard discovery: list the stream's shards and create leases for the new ones.

The rules are pure (:func:`new_leases`, :func:`ancestors`, :func:`parents_first`);
:class:`Lineage` performs them against the lease table for the worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import TYPE_CHECKING, Any

from consumer.lease.model import LATEST, TRIM_HORIZON, LeaseStore
from consumer.lease.planner import parents_done
from consumer.metrics import Metrics
from kernel.logs import get as get_logger
from kernel.tasks import all_of

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient

# Leases created at once by a shard sync: a new stream of 1,000 shards is leased in a few
# round trips, not 1,000 (one by one: 64 shards took 0.12-0.16 s on dynalite, 5-10 s for
# 1,000 at AWS's few milliseconds a conditional put); few enough for a small lease table.
CREATE_IN_FLIGHT = 16


@dataclasses.dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    parents: frozenset[str]
    closed: bool  # has an EndingSequenceNumber: no new records will arrive
    hash_range: tuple[int, int] | None = None  # HashKeyRange, both ends inclusive


@dataclasses.dataclass(frozen=True, slots=True)
class NewLease:
    shard_id: str
    checkpoint: str
    parents: frozenset[str]
    hash_range: tuple[int, int] | None = None


def hash_range_from_api(raw: Any) -> tuple[int, int] | None:
    keys = raw.get("HashKeyRange") or {}
    starting, ending = keys.get("StartingHashKey"), keys.get("EndingHashKey")
    return (int(starting), int(ending)) if starting and ending else None


def shard_from_api(raw: Any) -> Shard:
    """A shard as ListShards describes it."""
    parents = {raw.get("ParentShardId"), raw.get("AdjacentParentShardId")}
    ending = raw.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
    return Shard(
        raw["ShardId"],
        frozenset(p for p in parents if p),
        closed=ending is not None,
        hash_range=hash_range_from_api(raw),
    )


def child_from_api(raw: Any) -> Shard:
    """A child shard as GetRecords names it (``ChildShards``) at the end of its parent."""
    parents = frozenset(raw.get("ParentShards") or ())
    return Shard(raw["ShardId"], parents, closed=False, hash_range=hash_range_from_api(raw))


async def list_shards(kinesis: KinesisClient, stream: str) -> list[Shard]:
    """Every shard of the stream, following NextToken (which must be sent alone)."""
    shards: list[Shard] = []
    answer = await kinesis.list_shards(StreamName=stream)
    while True:
        shards.extend(shard_from_api(raw) for raw in answer.get("Shards", []))
        token = answer.get("NextToken")
        if not token:
            return shards
        answer = await kinesis.list_shards(NextToken=token)


def new_leases(
    shards: Iterable[Shard],
    existing: Set[str],
    initial_position: str,
) -> list[NewLease]:
    """Leases to create. A shard whose parent has (or gets) a lease is a child of a reshard and
    starts at TRIM_HORIZON so that nothing between the parent's end and now is skipped; other
    shards start at the configured initial position. With LATEST, closed root shards are left
    alone: nothing will ever arrive on them.

    A shard is never leased again once any descendant, at any depth, has a lease (DESIGN §3.8):
    its lease was finished and cleaned up, and ListShards keeps listing it for the whole
    retention period. ListShards names the whole ancestry of a listed shard: an ancestor closed
    before its descendants and leaves the listing before them."""
    shards = list(shards)
    # Which shards have or will have a lease: with LATEST, only those that exist already.
    known = set(existing)
    if initial_position != LATEST:
        known |= {s.shard_id for s in shards}
    superseded = ancestors({s.shard_id: s.parents for s in shards}, existing)
    created: list[NewLease] = []
    for shard in parents_first(shards):
        if shard.shard_id in existing or shard.shard_id in superseded:
            continue
        if any(parent in known for parent in shard.parents):
            created.append(new_lease(shard, TRIM_HORIZON))
            known.add(shard.shard_id)  # so that its own children count as children too
        elif not (initial_position == LATEST and shard.closed):
            created.append(new_lease(shard, initial_position))
    return created


def waves(leases: Sequence[NewLease]) -> list[list[NewLease]]:
    """Leases to create, in waves that may each be created at once: a lease comes in the wave
    after the last one holding one of its parents (``leases`` parents first, as
    :func:`new_leases` gives them), so a child's lease never exists before its parents'."""
    wave_of: dict[str, int] = {}
    found: list[list[NewLease]] = []
    for lease in leases:
        wave = 1 + max((wave_of.get(parent, -1) for parent in lease.parents), default=-1)
        wave_of[lease.shard_id] = wave
        if wave == len(found):
            found.append([])
        found[wave].append(lease)
    return found


def new_lease(shard: Shard, checkpoint: str) -> NewLease:
    return NewLease(shard.shard_id, checkpoint, shard.parents, shard.hash_range)


def ancestors(parents_of: Mapping[str, frozenset[str]], shard_ids: Iterable[str]) -> set[str]:
    """Every ancestor, at any depth, of ``shard_ids`` (cycles, which Kinesis never makes, end)."""
    found: set[str] = set()
    stack = [parent for shard_id in shard_ids for parent in parents_of.get(shard_id, ())]
    while stack:
        parent = stack.pop()
        if parent not in found:
            found.add(parent)
            stack.extend(parents_of.get(parent, ()))
    return found


def parents_first(shards: list[Shard]) -> list[Shard]:
    """Order shards so that every shard comes after those of its parents that are listed."""
    by_id = {shard.shard_id: shard for shard in shards}
    ordered: list[Shard] = []
    placed: set[str] = set()

    def place(shard: Shard, path: frozenset[str]) -> None:
        if shard.shard_id in placed or shard.shard_id in path:
            return
        for parent in sorted(shard.parents):
            if parent in by_id:
                place(by_id[parent], path | {shard.shard_id})
        placed.add(shard.shard_id)
        ordered.append(shard)

    for shard in shards:
        place(shard, frozenset())
    return ordered


class Lineage:
    """The leases of a stream's shards, parents before children: the leader's sync creates the
    missing ones, a shard at its end creates its children's, a child waits for its parents."""

    def __init__(
        self,
        store: LeaseStore,
        kinesis: KinesisClient,
        stream: str,
        initial_position: str,
        metrics: Metrics,
        worker_id: str,
    ) -> None:
        self._store = store
        self._kinesis = kinesis
        self._stream = stream
        self._initial = initial_position
        self._created = metrics.leases_created.labels(stream)
        self._log = get_logger(worker_id=worker_id)

    async def sync(self, existing: frozenset[str]) -> int:
        """The leader's shard sync: create leases for listed shards that have none."""
        shards = await list_shards(self._kinesis, self._stream)
        created = 0
        slots = asyncio.Semaphore(CREATE_IN_FLIGHT)

        async def create(new: NewLease) -> bool:
            async with slots:
                return await self._store.create(
                    new.shard_id, new.checkpoint, new.parents, new.hash_range
                )

        for wave in waves(new_leases(shards, existing, self._initial)):
            # a failure fails the sync (once the wave's other creates ended): the next round
            # repeats it
            created += sum(await all_of(*(create(new) for new in wave)))
        if created:
            self._created.inc(created)
            self._log.info(
                "leases_created", count=created, shards=len(shards), initial_position=self._initial
            )
        return created

    async def create_children(self, parent: str, children: Sequence[Shard]) -> None:
        """Leases for the children Kinesis named at ``parent``'s end (before its SHARD_END)."""
        created = [
            child.shard_id
            for child in children
            if await self._store.create(
                child.shard_id, TRIM_HORIZON, child.parents, child.hash_range
            )
        ]
        if created:
            self._created.inc(len(created))
            self._log.info("child_leases_created", shard_id=parent, shards=created)

    async def parents_done(self, parents: frozenset[str]) -> bool:
        """Each parent finished, or without a lease (the rule: :func:`planner.parents_done`)."""
        found = await asyncio.gather(*(self._store.get(parent) for parent in sorted(parents)))
        return parents_done([lease for lease in found if lease is not None], parents)
