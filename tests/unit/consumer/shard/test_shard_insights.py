"""A shard consumer with the insights on (and no archive), on virtual time against an
in-memory insights table: a successor that reads a shard again adopts every segment its
predecessor committed, and what the table holds counts each record once."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from typing import Any

import orjson
import pytest

from consumer.feeds import FEEDS
from consumer.insights.batch import BatchInsights
from consumer.insights.cells import Partial
from consumer.insights.kept import batch_facts
from consumer.insights.store import InsightsWire
from consumer.ops.insights import read_cells
from consumer.pipeline.entries import entries_of
from consumer.pipeline.pieces import Entry
from consumer.pipeline.segmented import Segmented, committer
from consumer.shard.lifecycle import Reason
from consumer.testing import FakeKinesis, LeaseTable, client_error, lease, reading
from tests.unit.consumer.shard.test_shard_consumer import Shop, stream

pytestmark = pytest.mark.looptime

TABLE = "TELEMAX-insights"


class MemoryTable:
    """The calls the insights make, on one table: conditional PutItem, GetItem,
    BatchWriteItem, Query by partition key and BatchGetItem."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.commit_puts = 0
        self.reads = 0

    def _key(self, item: dict[str, Any]) -> tuple[str, str]:
        return item["pk"]["S"], item["sk"]["S"]

    async def get_item(self, **kwargs: Any) -> dict[str, Any]:
        self.reads += 1
        found = self.items.get(self._key(kwargs["Key"]))
        return {"Item": found} if found else {}

    async def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.commit_puts += 1
        key = self._key(kwargs["Item"])
        if kwargs.get("ConditionExpression") == "attribute_not_exists(pk)" and key in self.items:
            raise client_error("ConditionalCheckFailedException", "exists")
        self.items[key] = kwargs["Item"]
        return {}

    async def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
        for request in kwargs["RequestItems"][TABLE]:
            item = request["PutRequest"]["Item"]
            self.items[self._key(item)] = item
        return {}

    async def query(self, **kwargs: Any) -> dict[str, Any]:
        """``pk = :pk``, optionally ``AND sk <= :p`` or ``sk > :p``; order and limit."""
        values = kwargs["ExpressionAttributeValues"]
        condition = kwargs["KeyConditionExpression"]
        found = [v for (p, _), v in sorted(self.items.items()) if p == values[":pk"]["S"]]
        if "sk <= :p" in condition:
            found = [v for v in found if v["sk"]["S"] <= values[":p"]["S"]]
        if "sk > :p" in condition:
            found = [v for v in found if v["sk"]["S"] > values[":p"]["S"]]
        if kwargs.get("ScanIndexForward") is False:
            found.reverse()
        return {"Items": found[: kwargs.get("Limit", len(found))]}

    async def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
        keys = kwargs["RequestItems"][TABLE]["Keys"]
        found = [self.items[self._key(k)] for k in keys if self._key(k) in self.items]
        return {"Responses": {TABLE: found}}

    def commits(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {k: v for k, v in self.items.items() if k[0].startswith("C#")}


def insights_shop(db: MemoryTable, max_bytes: int, count: int = 60) -> Shop:
    kinesis, table, _ = stream(closed=True, count=count)
    shop = Shop(kinesis, table)
    with_insights(shop, db, max_bytes)
    return shop


def with_insights(shop: Shop, db: MemoryTable, max_bytes: int) -> None:
    """The shop's consumer with the insights on (and no archive), into ``db``."""
    spec = FEEDS["telemax"].insights
    assert spec is not None
    slots = asyncio.Semaphore(8)
    kept = functools.partial(batch_facts, spec)
    wire = InsightsWire(db, TABLE, "telemax", spec, 3600, shop.metrics)  # type: ignore[arg-type]
    segments = Segmented(
        [committer("insights", wire, shop.metrics, slots)],
        lambda progress, records, name, shard: entries_of(
            progress,
            records,
            "telemax",
            name,
            shard,
            lines=False,
            facts=kept,
        ),
        max_bytes,
        5.0,
    )
    shop.context = dataclasses.replace(shop.context, segments=segments)


async def test_a_successor_adopts_every_segment_and_each_record_counts_once() -> None:
    db = MemoryTable()
    first = insights_shop(db, max_bytes=300)  # about five records a segment
    assert await first.run() is Reason.SHARD_END
    commits = db.commits()
    assert len(commits) > 5
    # Only its first segment could be an earlier owner's: it looked for a commit there only.
    assert db.reads == 1
    # The predecessor committed every segment but never checkpointed: its successor reads
    # the whole shard again, cutting larger segments, and must adopt each.
    again = insights_shop(db, max_bytes=5000)
    again.kinesis = first.kinesis
    again.context = dataclasses.replace(again.context, make_reader=first.context.make_reader)
    db.reads = 0
    assert await again.run() is Reason.SHARD_END
    assert db.commits() == commits, "nothing committed again"
    assert db.reads == len(commits), "after an adoption, the next segment is looked for"
    counted = {"feed": "telemax", "kind": "counted"}
    registry = first.metrics.registry
    assert registry.get_sample_value("telemax_insights_records_total", counted) == 60
    window = registry.get_sample_value(
        "telemax_insights_current_window_start_seconds", {"feed": "telemax"}
    )
    assert window == 1767225600  # 2026-01-01T00:00Z, the readings' five-minute window
    again_counted = again.metrics.registry.get_sample_value(
        "telemax_insights_records_total", counted
    )
    assert not again_counted, "adopted segments were counted by their first committer"
    table: Any = db
    cells, merged = await read_cells(table, TABLE, "telemax", ["2026-01-01"])
    assert merged == len(commits)
    spec = FEEDS["telemax"].insights
    assert spec is not None
    expected = Partial(spec)
    for n in range(60):
        item = FEEDS["telemax"].to_item(orjson.dumps(reading(f"r-{n:03d}")))
        expected.add(item, None)
    assert {k: c.count for k, c in cells.items()} == {k: c.count for k, c in expected.cells.items()}
    assert sum(c.stats["Data2"].total for c in cells.values()) == sum(
        c.stats["Data2"].total for c in expected.cells.values()
    )


@pytest.mark.parametrize("seed", range(8))
async def test_lambda_batches_retried_anywhere_count_each_record_once(seed: int) -> None:
    """Lambda's retries (crashes before answering, bisection, partial failures) over one
    shard: the insights table counts each record once."""
    rng = random.Random(seed)
    db = MemoryTable()
    spec = FEEDS["telemax"].insights
    assert spec is not None
    table: Any = db
    insights = BatchInsights(table, InsightsWire(table, TABLE, "telemax", spec, 3600))
    hours = [f"2026-12-03T{h:02d}:{m:02d}:00Z" for h in range(3) for m in range(0, 60, 7)]
    entries = []
    for n in range(1, 201):
        at = hours[n % len(hours)]
        item = FEEDS["telemax"].to_item(orjson.dumps(reading(f"HW-{n % 5}", at, Data2=n)))
        letter = n % 23 == 0  # a dead letter: a position, no item
        fact = None if letter else spec.fact_of(item)
        entries.append(Entry((str(n), 0), "", b"", letter, fact, None))
    checkpoint, size, invocations = 0, 40, 0
    while checkpoint < len(entries):
        invocations += 1
        batch = entries[checkpoint : checkpoint + size]
        done = len(batch) if invocations > 500 else rng.randint(0, len(batch))
        await insights.write("shardId-000000000001", batch[:done])
        outcome = "ok" if invocations > 500 else rng.choice(["ok", "partial", "crash"])
        if outcome == "crash":
            size = max(1, size // 2)
        elif outcome == "partial" or done < len(batch):
            checkpoint += done
        else:
            checkpoint, size = checkpoint + len(batch), 40
    cells, _ = await read_cells(table, TABLE, "telemax", ["2026-12-03"])
    expected = Partial(spec)
    for entry in entries:
        if entry.fact is not None:
            expected.add_facts([(entry.fact, None)])
    assert {k: c.count for k, c in cells.items()} == {k: c.count for k, c in expected.cells.items()}
    for key, cell in expected.cells.items():
        assert cells[key].stats["Data2"].total == cell.stats["Data2"].total


async def test_a_window_split_across_a_parent_and_its_children_counts_each_record_once() -> None:
    """The shard splits in the middle of a window: the parent's records and its children's
    land in the same windows, merged across the three shards."""
    kinesis = FakeKinesis()
    kinesis.add_shard("P", closed=True)
    kinesis.add_shard("C1", "P", closed=True)
    kinesis.add_shard("C2", "P", closed=True)
    sent = []
    for n in range(90):  # 00:00 to 00:08:54: two five-minute windows, split at 00:03
        shard = "P" if n < 30 else ("C1", "C2")[n % 2]
        one = reading(f"HW-{n % 3}", f"2026-01-01T00:{n * 6 // 60:02d}:{n * 6 % 60:02d}Z")
        kinesis.put(shard, one)
        sent.append(one)
    table = LeaseTable([lease(s, owner="me", counter=1) for s in ("P", "C1", "C2")])
    db = MemoryTable()
    for shard in ("P", "C1", "C2"):
        shop = Shop(kinesis, table, shard_id=shard)
        with_insights(shop, db, max_bytes=600)
        assert await shop.run() is Reason.SHARD_END
    reader: Any = db
    cells, merged = await read_cells(reader, TABLE, "telemax", ["2026-01-01"])
    shards = {key[0].split("#")[2] for key in db.commits()}
    assert shards == {"P", "C1", "C2"} and merged == len(db.commits())
    spec = FEEDS["telemax"].insights
    assert spec is not None
    expected = Partial(spec)
    for one in sent:
        expected.add(FEEDS["telemax"].to_item(orjson.dumps(one)), None)
    assert {k: c.count for k, c in cells.items()} == {k: c.count for k, c in expected.cells.items()}
    for key, cell in expected.cells.items():
        assert cells[key].stats["Data3"].total == cell.stats["Data3"].total
