"""The lease table in DynamoDB: reads, and conditional writes that fence on ``leaseCounter``.

Every write is an UpdateItem conditioned on the counter we last saw (and the owner where it
matters) that increments the counter. Losing that condition is a *lost race*: the method
returns ``None``; nothing is raised and nothing is logged as an error here.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from consumer.lease.metered import metered
from consumer.lease.model import SHARD_END, Lease
from consumer.metrics import Metrics
from kernel.aws import scan_pages, unless_fenced

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

# An item as DynamoDB answers it (wire format, read only); records' items are kernel.handlers.Item.
StoredItem = Mapping[str, Any]


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Items of the KCL 3.x (from 3.5) that share the lease table but are not leases: worker metrics,
# the leader, migration state. A lease has no entityType (2.x, ours) or "LEASE".
LEASE_ENTITY = "LEASE"
# What the KCL leaves behind a checkpoint it prepared (two-phase checkpoints); removed by ours.
PENDING_CHECKPOINT = (
    "pendingCheckpoint",
    "pendingCheckpointSubSequenceNumber",
    "pendingCheckpointState",
)


def is_lease_item(item: StoredItem) -> bool:
    return bool(item.get("entityType", {}).get("S", LEASE_ENTITY) == LEASE_ENTITY)


def lease_from_item(item: StoredItem) -> Lease:
    parents = item.get("parentShardId", {}).get("SS", [])
    owner = item.get("leaseOwner", {}).get("S")
    starting = item.get("startingHashKey", {}).get("S")
    ending = item.get("endingHashKey", {}).get("S")
    return Lease(
        key=item["leaseKey"]["S"],
        owner=owner or None,
        counter=int(item.get("leaseCounter", {}).get("N", "0")),
        checkpoint=item.get("checkpoint", {}).get("S", "TRIM_HORIZON"),
        sub_sequence=int(item.get("checkpointSubSequenceNumber", {}).get("N", "0")),
        owner_switches=int(item.get("ownerSwitchesSinceCheckpoint", {}).get("N", "0")),
        parents=frozenset(parents),
        updated_at=item.get("telemaxUpdatedAt", {}).get("S"),
        millis_behind=_optional_int(item.get("telemaxMillisBehind", {}).get("N")),
        children=frozenset(item.get("childShardIds", {}).get("SS", [])),
        hash_range=(int(starting), int(ending)) if starting and ending else None,
        checkpoint_owner=item.get("checkpointOwner", {}).get("S") or None,
    )


def _optional_int(raw: str | None) -> int | None:
    return None if raw is None else int(raw)


def new_lease_item(
    shard_id: str,
    checkpoint: str,
    parents: frozenset[str],
    hash_range: tuple[int, int] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "leaseKey": {"S": shard_id},
        "leaseCounter": {"N": "0"},
        "checkpoint": {"S": checkpoint},
        "checkpointSubSequenceNumber": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "telemaxUpdatedAt": {"S": utc_now_iso()},
    }
    if parents:
        item["parentShardId"] = {"SS": sorted(parents)}
    if hash_range is not None:
        item["startingHashKey"] = {"S": str(hash_range[0])}
        item["endingHashKey"] = {"S": str(hash_range[1])}
    return item


class LeaseRepository:
    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table: str,
        *,
        now_iso: Callable[[], str] = utc_now_iso,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = metered(dynamodb, metrics, "leases")
        self.table = table
        self._now_iso = now_iso

    async def list(self) -> list[Lease]:
        """Every lease, read consistently (one Scan page per MB); other items are skipped."""
        pages = scan_pages(self._db.scan, TableName=self.table, ConsistentRead=True)
        return [
            lease_from_item(item)
            async for page in pages
            for item in page.get("Items", [])
            if is_lease_item(item)
        ]

    async def sample_keys(self) -> builtins.list[str]:
        """The keys of the leases on the table's first Scan page (start-up checks)."""
        page = await self._db.scan(
            TableName=self.table,
            ProjectionExpression="leaseKey, entityType",
        )
        return [item["leaseKey"]["S"] for item in page.get("Items", []) if is_lease_item(item)]

    async def get(self, key: str) -> Lease | None:
        """One lease, read consistently; None when there is none."""
        answer = await self._db.get_item(
            TableName=self.table, Key={"leaseKey": {"S": key}}, ConsistentRead=True
        )
        item = answer.get("Item")
        return lease_from_item(item) if item and is_lease_item(item) else None

    async def create(
        self,
        shard_id: str,
        checkpoint: str,
        parents: frozenset[str],
        hash_range: tuple[int, int] | None = None,
    ) -> bool:
        """Create the lease of a new shard unless one exists; True when we created it."""
        created = await unless_fenced(
            self._db.put_item(
                TableName=self.table,
                Item=new_lease_item(shard_id, checkpoint, parents, hash_range),
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        )
        return created is not None

    async def take(self, lease: Lease, me: str) -> Lease | None:
        update = "SET leaseOwner = :me, leaseCounter = :next, telemaxUpdatedAt = :at"
        values: dict[str, Any] = {":me": {"S": me}}
        if lease.owner != me:
            update += ", ownerSwitchesSinceCheckpoint = :switches"
            values[":switches"] = {"N": str(lease.owner_switches + 1)}
        # A KCL 3.x hand-off left unfinished: the lease is ours now, as the KCL's take does.
        update += " REMOVE checkpointOwner"
        if lease.owner is None:
            condition = "leaseCounter = :seen AND attribute_not_exists(leaseOwner)"
        else:
            condition = "leaseCounter = :seen AND leaseOwner = :old"
            values[":old"] = {"S": lease.owner}
        return await self._update(lease, update, condition, values)

    async def assign(
        self, key: str, to: str, *, owners: AbstractSet[str | None], counter: int | None = None
    ) -> Lease | None:
        """The leader's write: name ``to`` the owner, advancing the counter. Conditional on the
        current owner being one of ``owners`` (None: no owner) and, when given, on ``counter``;
        never on a lease that is gone (no item is created). None when the condition failed."""
        alternatives: builtins.list[str] = []
        values: dict[str, Any] = {
            ":to": {"S": to},
            ":at": {"S": self._now_iso()},
            ":one": {"N": "1"},
            ":zero": {"N": "0"},
        }
        named = sorted(owner for owner in owners if owner is not None)
        if None in owners:
            alternatives.append("attribute_not_exists(leaseOwner)")
        for n, owner in enumerate(named):
            alternatives.append(f"leaseOwner = :o{n}")
            values[f":o{n}"] = {"S": owner}
        if not alternatives:
            return None  # no owner is acceptable: nothing could match
        condition = f"attribute_exists(leaseKey) AND ({' OR '.join(alternatives)})"
        if counter is not None:
            condition += " AND leaseCounter = :seen"
            values[":seen"] = {"N": str(counter)}
        update = (
            "SET leaseOwner = :to, telemaxUpdatedAt = :at, leaseCounter = leaseCounter + :one, "
            "ownerSwitchesSinceCheckpoint = if_not_exists(ownerSwitchesSinceCheckpoint, :zero) "
            "+ :one REMOVE checkpointOwner"
        )
        return await self._update_item(key, update, condition, values)

    async def renew(self, lease: Lease) -> Lease | None:
        """A KCL worker's renewal (telemax's workers beat instead): kept for tools and tests
        that act as one."""
        return await self._update_owned(lease, "SET leaseCounter = :next, telemaxUpdatedAt = :at")

    async def checkpoint(
        self,
        lease: Lease,
        position: str,
        sub_sequence: int = 0,
        millis_behind: int | None = None,
        children: frozenset[str] = frozenset(),
    ) -> Lease | None:
        """Checkpoint; with SHARD_END, ``children`` names the child shards (``childShardIds``,
        as the KCL writes it). A checkpoint the KCL prepared but never wrote is dropped."""
        update = (
            "SET leaseCounter = :next, telemaxUpdatedAt = :at, checkpoint = :cp, "
            "checkpointSubSequenceNumber = :sub, ownerSwitchesSinceCheckpoint = :zero"
        )
        values: dict[str, Any] = {
            ":cp": {"S": position},
            ":sub": {"N": str(sub_sequence)},
            ":zero": {"N": "0"},
        }
        if millis_behind is not None:
            update += ", telemaxMillisBehind = :behind"
            values[":behind"] = {"N": str(millis_behind)}
        if children:
            update += ", childShardIds = :children"
            values[":children"] = {"SS": sorted(children)}
        update += " REMOVE " + ", ".join(PENDING_CHECKPOINT)
        return await self._update_owned(lease, update, values)

    async def delete_finished(self, lease: Lease) -> bool:
        """Delete a lease at SHARD_END that nobody changed since we read it."""
        deleted = await unless_fenced(
            self._db.delete_item(
                TableName=self.table,
                Key={"leaseKey": {"S": lease.key}},
                ConditionExpression="leaseCounter = :seen AND checkpoint = :end",
                ExpressionAttributeValues={
                    ":seen": {"N": str(lease.counter)},
                    ":end": {"S": SHARD_END},
                },
            )
        )
        return deleted is not None

    async def release(self, lease: Lease) -> Lease | None:
        return await self._update_owned(
            lease, "SET leaseCounter = :next, telemaxUpdatedAt = :at REMOVE leaseOwner"
        )

    async def _update_owned(
        self, lease: Lease, update: str, values: dict[str, Any] | None = None
    ) -> Lease | None:
        if lease.owner is None:
            return None
        return await self._update(
            lease,
            update,
            "leaseCounter = :seen AND leaseOwner = :me",
            {":me": {"S": lease.owner}, **(values or {})},
        )

    async def _update(
        self, lease: Lease, update: str, condition: str, values: dict[str, Any]
    ) -> Lease | None:
        counters = {
            ":seen": {"N": str(lease.counter)},
            ":next": {"N": str(lease.counter + 1)},
            ":at": {"S": self._now_iso()},
        }
        return await self._update_item(lease.key, update, condition, {**counters, **values})

    async def _update_item(
        self, key: str, update: str, condition: str, values: dict[str, Any]
    ) -> Lease | None:
        """One conditional UpdateItem answering the lease as written; None when the condition
        failed (a lost race)."""
        answer = await unless_fenced(
            self._db.update_item(
                TableName=self.table,
                Key={"leaseKey": {"S": key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        )
        return None if answer is None else lease_from_item(answer["Attributes"])
