"""The insights table: each shard's partial aggregates, committed per segment of consecutive
positions, and merged when read.

Why the stored result counts every record exactly once (the archive's argument, with a
DynamoDB commit instead of an S3 object; :mod:`consumer.pipeline.archive`):

* A shard's records are cut into *segments* of consecutive positions; a shard's checkpoint
  moves only to the end of a committed segment. So a new owner (after a fail-over, a
  restart, a hand-over) resumes right after a segment's end, and its first segment starts
  where any segment the old owner committed beyond the checkpoint starts.
* A segment is committed by a conditional PutItem of its *commit item*
  (``pk = C#{feed}#{shard}``, ``sk = {first position}``) holding its end. Before writing, the
  writer reads the commit item: if it is there, the segment is *adopted* — its records are
  counted already, up to the end it records, and the writer's next segment starts after it.
  (Not when the segment follows one this shard's stream committed itself: no earlier owner's
  segment starts there; a zombie's, written at the same time, the conditional commit finds.)
* The segment's cells are written first, as *data items* keyed by the segment's first and
  end and the attempt (``pk = D#{feed}#{day}``, ``sk = {shard}#{first}#{end}#{attempt}#{part}``,
  the attempt a random token that the commit item records). An attempt that died before its
  commit leaves data items no commit names: the reader ignores them — also those of an
  attempt at the same segment that made other cells, or more parts (a record stored then and
  dead-lettered now; an upgrade that encodes cells otherwise; a zombie's, written beside the
  owner's): a part is read only with the attempt that committed. A retry of the same try in
  the same process (a throttled write) keeps its attempt, so it rewrites its own parts.
* The reader merges the data items whose (shard, first, end, attempt) a commit names (a commit
  without an attempt, an earlier version's: its parts without one). Merging is exact
  for counts and sums, and DDSketch merges bin counts: the result equals a recomputation from
  scratch over the stream, whatever telemax re-read in between — retried batches, replays, a
  reshard (a child shard is its own positions).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.config import Settings, feed_of
from consumer.insights.cells import Partial
from consumer.insights.codec import parts_by_day
from consumer.insights.kept import add_segment
from consumer.insights.windows import InsightSpec
from consumer.metrics import Metrics
from consumer.pipeline.archive import Segment, parse_position, position_name
from consumer.pipeline.pieces import Entry, Position
from consumer.pipeline.segmented import Committer, committer
from kernel.aws import Clients, check_usable, unless_fenced
from kernel.backoff import Backoff
from kernel.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient


def commit_key(feed: str, shard_id: str, first: Position) -> dict[str, Any]:
    return {"pk": {"S": f"C#{feed}#{shard_id}"}, "sk": {"S": position_name(first)}}


ATTEMPT_MARK = "a"  # an attempt's token begins so (a position's name is digits)


def new_attempt() -> str:
    """A token for one attempt at committing a segment: its data items' and its commit's."""
    return ATTEMPT_MARK + secrets.token_hex(6)


SegmentKey = tuple[str, Position, Position, tuple[Position, ...]]
MAX_ATTEMPTS_KEPT = 1_024


def segment_key(segment: Segment) -> SegmentKey:
    """What makes a try at a segment the same try: its shard, first and last position and its
    dead letters' positions (the records it does not count: another try may have stored one,
    and then made other cells). A batch's run of stored items holds no dead letter."""
    letters = tuple(p.position for p in segment.entries if isinstance(p, Entry) and p.letter)
    return segment.shard_id, segment.first, segment.last, letters


def part_of(sort_key: str) -> tuple[str, str, str, str | None]:
    """(shard, first, end, attempt) of a data item's sort key; attempt None for a part an
    earlier version wrote (``{shard}#{first}#{end}#{part}``)."""
    head, _ = sort_key.rsplit("#", 1)
    rest, last = head.rsplit("#", 1)
    if last.startswith(ATTEMPT_MARK):
        shard, first, end = rest.rsplit("#", 2)
        return shard, first, end, last
    shard, first = rest.rsplit("#", 1)
    return shard, first, last, None


class InsightsWire:
    """Segments to the insights table; :meth:`outcome` says what became of each."""

    destination = "insights"
    api = "PutItem"
    max_chunk = 1
    refusal_codes: frozenset[str] = frozenset()
    refusal_reason = "rejected_by_dynamodb"

    def __init__(
        self,
        dynamodb: DynamoDBClient,
        table: str,
        feed: str,
        spec: InsightSpec,
        lateness_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = dynamodb
        self.table = table
        self.feed = feed
        self.spec = spec
        self.lateness_s = lateness_s
        self._outcomes: dict[tuple[str, Position], Position | None] = {}
        self._metrics = metrics
        self._newest: tuple[int, int] = (0, 0)  # (window start, records counted in it)
        # each segment's attempt until it is committed or adopted: a retry of the same
        # segment (a throttled write, the sink sending it again) writes its cells over its
        # own — the same bytes under the same keys —, not one more set of parts that no
        # commit names. "The same": the same positions stored (SegmentKey).
        self._attempts: dict[SegmentKey, str] = {}

    def identity(self, entry: Segment) -> Hashable:
        return entry.shard_id, entry.first

    async def send(self, chunk: Sequence[Segment]) -> Sequence[Segment]:
        for segment in chunk:
            self._outcomes[(segment.shard_id, segment.first)] = await self.commit(segment)
        return []

    def outcome(self, segment: Segment) -> Position | None:
        """None: committed as given; else the end of the segment committed there (adopted)."""
        return self._outcomes.pop((segment.shard_id, segment.first))

    async def commit(self, segment: Segment) -> Position | None:
        """Commit the segment's cells; None, or the end of a segment committed there first
        (adopted)."""
        same = segment_key(segment)
        if len(self._attempts) >= MAX_ATTEMPTS_KEPT:  # (segments given up on: a retry of
            self._attempts.clear()  # one then writes under an attempt of its own)
        attempt = self._attempts.setdefault(same, new_attempt())
        found = await self._commit(segment, attempt)
        # (kept only while it raises: for its retry; pop, for a concurrent commit may have
        # cleared them all meanwhile)
        self._attempts.pop(same, None)
        return found

    async def _commit(self, segment: Segment, attempt: str) -> Position | None:
        key = commit_key(self.feed, segment.shard_id, segment.first)
        if not segment.follows_ours:  # an earlier owner's commit may be here: adopt it
            found = await self._committed_end(key)
            if found is not None:
                return found
        partial = Partial(self.spec, self.lateness_s)
        add_segment(partial, segment.entries)
        end = position_name(segment.last)
        prefix = f"{segment.shard_id}#{position_name(segment.first)}#{end}#{attempt}#"
        days = parts_by_day(partial.cells)
        await self._put_all(
            {
                "pk": {"S": f"D#{self.feed}#{day}"},
                "sk": {"S": f"{prefix}{n:04d}"},
                "cells": {"B": part},
            }
            for day, parts in days.items()
            for n, part in enumerate(parts)
        )
        item = {
            **key,
            "end": {"S": end},
            "attempt": {"S": attempt},
            "records": {"N": str(segment.records)},
            "untimed": {"N": str(partial.untimed)},
        }
        if days:
            item["days"] = {"SS": sorted(days)}
        done = await unless_fenced(
            self._db.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        )
        if done is not None:
            self._observe(partial)
            return None
        return await self._committed_end(key)  # a twin committed first: take its end

    def _observe(self, partial: Partial) -> None:
        """Counters of what this commit counted; gauges of the newest window (current only:
        one series per feed, whatever the groups)."""
        if self._metrics is None or not partial.cells:
            return
        metrics, feed = self._metrics, self.feed
        counted = sum(cell.count for cell in partial.cells.values())
        late = sum(cell.late for cell in partial.cells.values())
        metrics.insights_records.labels(feed, "counted").inc(counted)
        if late:
            metrics.insights_records.labels(feed, "late").inc(late)
        newest = max(start for start, _ in partial.cells)
        here = sum(c.count for (start, _), c in partial.cells.items() if start == newest)
        if newest > self._newest[0]:
            self._newest = (newest, here)
        elif newest == self._newest[0]:
            self._newest = (newest, self._newest[1] + here)
        else:
            return
        metrics.insights_window.labels(feed).set(self._newest[0])
        metrics.insights_window_records.labels(feed).set(self._newest[1])

    async def _committed_end(self, key: dict[str, Any]) -> Position | None:
        answer = await self._db.get_item(TableName=self.table, Key=key, ConsistentRead=True)
        item = answer.get("Item")
        return None if item is None else parse_position(item["end"]["S"])

    async def _put_all(self, items: Iterable[dict[str, Any]]) -> None:
        pending: list[Any] = [{"PutRequest": {"Item": item}} for item in items]
        backoff = Backoff(base=0.05, cap=2.0)
        while pending:
            chunk, pending = pending[:25], pending[25:]
            answer: Any = await self._db.batch_write_item(RequestItems={self.table: chunk})
            left = list(answer.get("UnprocessedItems", {}).get(self.table, []))
            if left:
                pending = left + pending
                await backoff.sleep()


def insights_wire(
    settings: Settings, dynamodb: DynamoDBClient, metrics: Metrics | None = None
) -> InsightsWire | None:
    """The insights ``settings`` ask for, or None when they are off (one line when the feed
    declares none)."""
    if not settings.insights:
        return None
    feed = feed_of(settings)
    if feed.insights is None:
        raise ConfigError(f"TELEMAX_INSIGHTS: feed {feed.name} declares no insights")
    return InsightsWire(
        dynamodb,
        settings.insights_table,
        feed.name,
        feed.insights,
        settings.insights_lateness_s,
        metrics,
    )


def insights_committer(
    settings: Settings,
    clients: Clients,
    metrics: Metrics,
    slots: asyncio.Semaphore,
    dynamodb: Any = None,
) -> Committer | None:
    """The insights as a committer of segments (through ``dynamodb``, else the generic
    client), or None when they are off."""
    wire = insights_wire(settings, dynamodb or clients.dynamodb, metrics)
    return None if wire is None else committer("insights", wire, metrics, slots)


async def check_insights(clients: Clients, settings: Settings) -> None:
    """Start-up: the insights table is there and ours to use (one line if not)."""
    if settings.insights:
        await check_usable(
            [
                (
                    f"DynamoDB insights table {settings.insights_table!r}",
                    lambda: clients.dynamodb.describe_table(TableName=settings.insights_table),
                )
            ]
        )
