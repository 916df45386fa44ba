"""The lease: one item per shard in the lease table, with KCL 2.x attribute names."""

from __future__ import annotations

import dataclasses

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

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    @property
    def has_sequence(self) -> bool:
        return self.checkpoint not in SENTINELS
