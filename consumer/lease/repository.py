"""The lease table in DynamoDB: reads, and conditional writes that fence on ``leaseCounter``.

Every write is an UpdateItem conditioned on the counter we last saw (and the owner where it
matters) that increments the counter. Losing that condition is a *lost race*: the method
returns ``None``; nothing is raised and nothing is logged as an error here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from consumer.aws import Action, classify
from consumer.lease.model import SHARD_END, Lease

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

Item = Mapping[str, Any]


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def lease_from_item(item: Item) -> Lease:
    parents = item.get("parentShardId", {}).get("SS", [])
    owner = item.get("leaseOwner", {}).get("S")
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
    )


def _optional_int(raw: str | None) -> int | None:
    return None if raw is None else int(raw)


def new_lease_item(shard_id: str, checkpoint: str, parents: frozenset[str]) -> dict[str, Any]:
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
    return item


class LeaseRepository:
    def __init__(
        self, dynamodb: DynamoDBClient, table: str, *, now_iso: Callable[[], str] = utc_now_iso
    ) -> None:
        self._db = dynamodb
        self.table = table
        self._now_iso = now_iso

    async def list(self) -> list[Lease]:
        """Every lease, read consistently (one Scan page per MB)."""
        # Its own loop, not a shared helper: the IAM test attributes each call to the tables
        # of the module that makes it, and this Scan is the worker's only one.
        leases: list[Lease] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = await self._db.scan(**kwargs)
            leases.extend(lease_from_item(item) for item in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return leases
            kwargs["ExclusiveStartKey"] = last

    async def create(self, shard_id: str, checkpoint: str, parents: frozenset[str]) -> bool:
        """Create the lease of a new shard unless one exists; True when we created it."""
        try:
            await self._db.put_item(
                TableName=self.table,
                Item=new_lease_item(shard_id, checkpoint, parents),
                ConditionExpression="attribute_not_exists(leaseKey)",
            )
        except ClientError as exc:
            if classify(exc) is Action.FENCE:
                return False
            raise
        return True

    async def take(self, lease: Lease, me: str) -> Lease | None:
        update = "SET leaseOwner = :me, leaseCounter = :next, telemaxUpdatedAt = :at"
        values: dict[str, Any] = {":me": {"S": me}}
        if lease.owner != me:
            update += ", ownerSwitchesSinceCheckpoint = :switches"
            values[":switches"] = {"N": str(lease.owner_switches + 1)}
        if lease.owner is None:
            condition = "leaseCounter = :seen AND attribute_not_exists(leaseOwner)"
        else:
            condition = "leaseCounter = :seen AND leaseOwner = :old"
            values[":old"] = {"S": lease.owner}
        return await self._update(lease, update, condition, values)

    async def renew(self, lease: Lease) -> Lease | None:
        return await self._update_owned(lease, "SET leaseCounter = :next, telemaxUpdatedAt = :at")

    async def checkpoint(
        self, lease: Lease, position: str, sub_sequence: int = 0, millis_behind: int | None = None
    ) -> Lease | None:
        update = (
            "SET leaseCounter = :next, telemaxUpdatedAt = :at, checkpoint = :cp, "
            "checkpointSubSequenceNumber = :sub, ownerSwitchesSinceCheckpoint = :zero"
        )
        values = {":cp": {"S": position}, ":sub": {"N": str(sub_sequence)}, ":zero": {"N": "0"}}
        if millis_behind is not None:
            update += ", telemaxMillisBehind = :behind"
            values[":behind"] = {"N": str(millis_behind)}
        return await self._update_owned(lease, update, values)

    async def delete_finished(self, lease: Lease) -> bool:
        """Delete a lease at SHARD_END that nobody changed since we read it."""
        try:
            await self._db.delete_item(
                TableName=self.table,
                Key={"leaseKey": {"S": lease.key}},
                ConditionExpression="leaseCounter = :seen AND checkpoint = :end",
                ExpressionAttributeValues={
                    ":seen": {"N": str(lease.counter)},
                    ":end": {"S": SHARD_END},
                },
            )
        except ClientError as exc:
            if classify(exc) is Action.FENCE:
                return False
            raise
        return True

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
        try:
            answer = await self._db.update_item(
                TableName=self.table,
                Key={"leaseKey": {"S": lease.key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues={
                    ":seen": {"N": str(lease.counter)},
                    ":next": {"N": str(lease.counter + 1)},
                    ":at": {"S": self._now_iso()},
                    **values,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if classify(exc) is Action.FENCE:
                return None
            raise
        return lease_from_item(answer["Attributes"])
