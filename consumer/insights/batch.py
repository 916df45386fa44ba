"""The Lambda handler's insights: the same table and commits as the workers', for batches whose
start Lambda chooses.

A retry may start inside a segment an earlier invocation committed (bisected, or from a
partial failure's record). Before committing the entries from position ``p`` on, one Query
finds the commit with the greatest first position at or before ``p`` (``ScanIndexForward``
false, ``Limit`` 1): if it reaches ``p``, every entry up to its end is counted already and
skipped. Otherwise the run stops short of the next commit after ``p`` (one more Query), and
is committed as a segment (:meth:`~consumer.insights.store.InsightsWire.commit`, which adopts
a commit it finds at the same first position). Exact when a batch is a run of consecutive
positions of its shard: ``ParallelizationFactor`` 1, as for the archive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from consumer.config import Settings
from consumer.insights.store import InsightsWire, insights_wire
from consumer.metrics import Metrics
from consumer.pipeline.archive import Segment, parse_position, position_name
from consumer.pipeline.pieces import Entry, Position, order

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient


class BatchInsights:
    def __init__(self, dynamodb: DynamoDBClient, wire: InsightsWire) -> None:
        self._db = dynamodb
        self.wire = wire

    async def write(self, shard_id: str, entries: Sequence[Entry]) -> None:
        """Count every entry exactly once; idempotent (a retry finds what it committed)."""
        remaining = sorted(entries, key=lambda e: order(e.position))
        while remaining:
            first = remaining[0].position
            cover = await self._commit_at_or_before(shard_id, first)
            if cover is not None and order(cover[1]) >= order(first):
                remaining = _after(remaining, cover[1])
                continue
            following = await self._first_commit_after(shard_id, first)
            run = [
                e for e in remaining if following is None or order(e.position) < order(following)
            ]
            found = await self.wire.commit(Segment(shard_id, tuple(run)))
            remaining = _after(remaining, found if found is not None else run[-1].position)

    async def _commit_at_or_before(
        self, shard_id: str, position: Position
    ) -> tuple[Position, Position] | None:
        items = await self._query(shard_id, "sk <= :p", position, forward=False)
        if not items:
            return None
        return parse_position(items[0]["sk"]["S"]), parse_position(items[0]["end"]["S"])

    async def _first_commit_after(self, shard_id: str, position: Position) -> Position | None:
        items = await self._query(shard_id, "sk > :p", position, forward=True)
        return parse_position(items[0]["sk"]["S"]) if items else None

    async def _query(
        self, shard_id: str, condition: str, position: Position, *, forward: bool
    ) -> list[Any]:
        answer: Any = await self._db.query(
            TableName=self.wire.table,
            KeyConditionExpression=f"pk = :pk AND {condition}",
            ExpressionAttributeValues={
                ":pk": {"S": f"C#{self.wire.feed}#{shard_id}"},
                ":p": {"S": position_name(position)},
            },
            ScanIndexForward=forward,
            Limit=1,
            ConsistentRead=True,
        )
        return list(answer.get("Items", []))


def _after(entries: list[Entry], end: Position) -> list[Entry]:
    last = order(end)
    return [e for e in entries if order(e.position) > last]


def batch_insights_for(
    settings: Settings, dynamodb: DynamoDBClient, metrics: Metrics | None = None
) -> BatchInsights | None:
    wire = insights_wire(settings, dynamodb, metrics)
    return None if wire is None else BatchInsights(dynamodb, wire)
