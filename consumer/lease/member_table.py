"""The membership table in DynamoDB (DESIGN §3): one item per worker, and the leader's item.

A beat is one unconditional UpdateItem that answers the item as written; every other write is
conditional, and losing its condition is a *lost race*: the method answers None (or False);
nothing is raised and nothing is logged as an error here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from consumer.lease.members import LEADER_KEY, Beat, Leadership, Member
from consumer.lease.metered import metered
from consumer.lease.repository import utc_now_iso
from consumer.metrics import Metrics
from kernel.aws import scan_pages, unless_fenced

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

# An item as DynamoDB answers it (wire format, read only); records' items are kernel.handlers.Item.
StoredItem = Mapping[str, Any]
EXISTS = "attribute_exists(workerId)"
OWNED = "leader = :me AND leaderCounter = :seen"  # the leader item, as ``current`` shows it


def member_from_item(item: StoredItem) -> Member:
    return Member(
        worker_id=item["workerId"]["S"],
        beat=int(item.get("beat", {}).get("N", "0")),
        incarnation=item.get("incarnation", {}).get("S", ""),
        grants=frozenset(item.get("grants", {}).get("SS", [])),
        revokes=frozenset(item.get("revokes", {}).get("SS", [])),
        leaving=bool(item.get("leaving", {}).get("BOOL", False)),
        draining=bool(item.get("draining", {}).get("BOOL", False)),
        ends=int(item.get("ends", {}).get("N", "0")),
        successor=bool(item.get("successor", {}).get("BOOL", False)),
        pokes=int(item.get("pokes", {}).get("N", "0")),
        expects=int(item.get("expects", {}).get("N", "0")),
        expect_s=float(item.get("expectS", {}).get("N", "0")),
    )


def leadership_from_item(item: StoredItem) -> Leadership:
    return Leadership(
        owner=item.get("leader", {}).get("S") or None,
        counter=int(item.get("leaderCounter", {}).get("N", "0")),
        successor=item.get("successorId", {}).get("S") or None,
    )


def _strings(keys: frozenset[str]) -> dict[str, Any]:
    return {"SS": sorted(keys)}


def _number(value: int) -> dict[str, Any]:
    return {"N": str(value)}


class MemberRepository:
    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table: str,
        *,
        now_iso: Callable[[], str] = utc_now_iso,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = metered(dynamodb, metrics, "members")
        self.table = table
        self._now_iso = now_iso

    # --- a worker's own item --------------------------------------------------------------

    async def beat(self, worker_id: str, beat: Beat) -> Member:
        """Advance ``beat`` (creating the item when absent), acknowledge grants and revokes by
        deleting them from the sets (a fresh incarnation drops them all), and answer the item
        as written: what the leader wants of us arrives with it. Unconditional: a beat never
        loses a race."""
        update = (
            "ADD beat :one SET incarnation = :incarnation, ends = :ends, leaving = :leaving, "
            "draining = :draining, updatedAt = :at"
        )
        values: dict[str, Any] = {
            ":one": _number(1),
            ":incarnation": {"S": beat.incarnation},
            ":ends": _number(beat.ends),
            ":leaving": {"BOOL": beat.leaving},
            ":draining": {"BOOL": beat.draining},
            ":at": {"S": self._now_iso()},
        }
        if beat.fresh:  # what was meant for an earlier incarnation is not for us
            update += " REMOVE grants, revokes"
        else:  # DynamoDB refuses an empty set as a value: acknowledge only what there is
            deletes: list[str] = []
            for attribute, acked in (
                ("grants", beat.acked_grants),
                ("revokes", beat.acked_revokes),
            ):
                if acked:
                    deletes.append(f"{attribute} :acked_{attribute}")
                    values[f":acked_{attribute}"] = _strings(acked)
            if deletes:
                update += " DELETE " + ", ".join(deletes)
        answer = await self._db.update_item(
            TableName=self.table,
            Key={"workerId": {"S": worker_id}},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return member_from_item(answer["Attributes"])

    # --- the leader's view and writes -----------------------------------------------------

    async def members(self) -> list[Member]:
        """Every worker's item, read consistently, all pages; the leader item is skipped."""
        pages = scan_pages(self._db.scan, TableName=self.table, ConsistentRead=True)
        return [
            member_from_item(item)
            async for page in pages
            for item in page.get("Items", [])
            if item["workerId"]["S"] != LEADER_KEY
        ]

    async def grant(self, member: Member, keys: frozenset[str]) -> bool:
        """Add to a worker's grants, conditional on its incarnation being ``member``'s and on
        its not having left; False when not (or the worker has no item)."""
        return await self._add(member, "grants", keys)

    async def revoke(self, member: Member, keys: frozenset[str]) -> bool:
        """Add to a worker's revokes, conditional as :meth:`grant` is."""
        return await self._add(member, "revokes", keys)

    async def name_successor(self, worker_id: str, successor: bool) -> bool:
        written = await self._update(
            worker_id, "SET successor = :successor", EXISTS, {":successor": {"BOOL": successor}}
        )
        return written is not None

    async def poke(self, worker_id: str) -> bool:
        written = await self._update(worker_id, "ADD pokes :one", EXISTS, {":one": _number(1)})
        return written is not None

    async def expect(self, member: Member, seconds: float) -> bool:
        written = await self._update(
            member.worker_id,
            "ADD expects :one SET expectS = :seconds",
            "incarnation = :incarnation",
            {
                ":one": _number(1),
                ":seconds": {"N": f"{seconds:.3f}"},
                ":incarnation": {"S": member.incarnation},
            },
        )
        return written is not None

    async def forget(self, member: Member) -> bool:
        """Delete a gone worker's item unless it beat since ``member`` was read."""
        deleted = await unless_fenced(
            self._db.delete_item(
                TableName=self.table,
                Key={"workerId": {"S": member.worker_id}},
                ConditionExpression="beat = :beat",
                ExpressionAttributeValues={":beat": _number(member.beat)},
            )
        )
        return deleted is not None

    async def _add(self, member: Member, attribute: str, keys: frozenset[str]) -> bool:
        if not keys:
            return True
        written = await self._update(
            member.worker_id,
            f"ADD {attribute} :keys",
            # False on an absent item too; and once the worker beat its last (leaving): it
            # never looks again, so what we wrote would be left naming a worker that has gone.
            "incarnation = :incarnation AND (attribute_not_exists(leaving) OR leaving = :no)",
            {
                ":keys": _strings(keys),
                ":incarnation": {"S": member.incarnation},
                ":no": {"BOOL": False},
            },
        )
        return written is not None

    # --- the leader item ------------------------------------------------------------------

    async def leader(self) -> Leadership | None:
        answer = await self._db.get_item(TableName=self.table, Key={"workerId": {"S": LEADER_KEY}})
        item = answer.get("Item")
        return leadership_from_item(item) if item else None

    async def claim_leadership(self, me: str, seen: Leadership | None) -> Leadership | None:
        """Become leader: the item is absent (``seen`` None), or unchanged since ``seen``."""
        if seen is None:
            created = await unless_fenced(
                self._db.put_item(
                    TableName=self.table,
                    Item={
                        "workerId": {"S": LEADER_KEY},
                        "leader": {"S": me},
                        "leaderCounter": _number(1),
                    },
                    ConditionExpression="attribute_not_exists(workerId)",
                )
            )
            return None if created is None else Leadership(owner=me, counter=1)
        return await self._leader_update(
            "SET leader = :me, leaderCounter = :next REMOVE successorId",
            "leaderCounter = :seen",
            seen,
            {":me": {"S": me}},
        )

    async def renew_leadership(
        self, current: Leadership, successor: str | None
    ) -> Leadership | None:
        if current.owner is None:
            return None
        update = "SET leaderCounter = :next"
        values: dict[str, Any] = {":me": {"S": current.owner}}
        if successor is None:
            update += " REMOVE successorId"
        else:
            update += ", successorId = :successor"
            values[":successor"] = {"S": successor}
        return await self._leader_update(update, OWNED, current, values)

    async def release_leadership(self, current: Leadership) -> bool:
        if current.owner is None:
            return False
        released = await self._leader_update(
            "SET leaderCounter = :next REMOVE leader, successorId",
            OWNED,
            current,
            {":me": {"S": current.owner}},
        )
        return released is not None

    async def _leader_update(
        self, update: str, condition: str, seen: Leadership, values: dict[str, Any]
    ) -> Leadership | None:
        values = {
            ":seen": _number(seen.counter),
            ":next": _number(seen.counter + 1),
            **values,
        }
        item = await self._update(LEADER_KEY, update, condition, values)
        return None if item is None else leadership_from_item(item)

    async def _update(
        self, worker_id: str, update: str, condition: str, values: dict[str, Any]
    ) -> StoredItem | None:
        answer = await unless_fenced(
            self._db.update_item(
                TableName=self.table,
                Key={"workerId": {"S": worker_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        )
        return None if answer is None else answer["Attributes"]
