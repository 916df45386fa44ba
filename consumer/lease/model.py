"""The lease: one item per shard in the lease table, with KCL 2.x attribute names."""

from __future__ import annotations

import dataclasses
from collections.abc import Set as AbstractSet
from typing import Protocol

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_TIMESTAMP = "AT_TIMESTAMP"
SHARD_END = "SHARD_END"
SENTINELS = frozenset({TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END})


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A snapshot of one lease item as last read or written."""

    key: str  # leaseKey: the shard id
    owner: str | None  # leaseOwner: None when nobody holds it
    counter: int  # leaseCounter: every write increments it (fencing token)
    checkpoint: str  # a sequence number or one of SENTINELS
    sub_sequence: int = 0  # checkpointSubSequenceNumber (KPL user records)
    owner_switches: int = 0  # ownerSwitchesSinceCheckpoint
    parents: frozenset[str] = frozenset()  # parentShardId
    updated_at: str | None = None  # ours: wall-clock time of the last write, display only
    millis_behind: int | None = None  # ours: MillisBehindLatest when last checkpointed
    children: frozenset[str] = frozenset()  # childShardIds: written with SHARD_END
    hash_range: tuple[int, int] | None = None  # startingHashKey, endingHashKey (inclusive)
    # checkpointOwner (KCL 3.x graceful hand-off): the previous owner, still finishing
    checkpoint_owner: str | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    @property
    def has_sequence(self) -> bool:
        return self.checkpoint not in SENTINELS


def is_multi_stream_key(key: str) -> bool:
    """A KCL multi-stream lease key: ``account:stream:creationEpoch:shardId``."""
    return key.count(":") >= 3


class LeaseStore(Protocol):
    """The lease table as the coordinator and a held lease use it (DESIGN §3.1): every write
    is conditional on the counter (and owner) of the lease passed in and answers the lease as
    written, or None when the condition failed: a lost race is a return value."""

    async def list(self) -> list[Lease]: ...

    async def get(self, key: str) -> Lease | None: ...

    async def create(
        self,
        shard_id: str,
        checkpoint: str,
        parents: frozenset[str],
        hash_range: tuple[int, int] | None = None,
    ) -> bool: ...

    async def take(self, lease: Lease, me: str) -> Lease | None: ...

    async def assign(
        self, key: str, to: str, *, owners: AbstractSet[str | None], counter: int | None = None
    ) -> Lease | None:
        """The leader's write: name ``to`` the owner, advancing the counter. Conditional on the
        current owner being one of ``owners`` (None: no owner) and, when given, on ``counter``
        (a lease whose owner is not a member is judged by its counter, as the KCL does)."""
        ...

    async def checkpoint(
        self,
        lease: Lease,
        position: str,
        sub_sequence: int = 0,
        millis_behind: int | None = None,
        children: frozenset[str] = frozenset(),
    ) -> Lease | None: ...

    async def release(self, lease: Lease) -> Lease | None: ...

    async def delete_finished(self, lease: Lease) -> bool: ...
