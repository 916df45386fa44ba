"""The insights table's writer and reader, in process against the in-memory table: what the
reader merges is what a commit names — one attempt's cells, whatever other attempts at the
same segment left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from consumer.feeds import FEEDS
from consumer.insights import codec, store
from consumer.insights.cells import Partial
from consumer.insights.store import InsightsWire, commit_key, part_of
from consumer.ops.insights import read_cells
from consumer.pipeline.archive import Segment, position_name
from consumer.pipeline.pieces import Entry
from consumer.testing import client_error, reading
from tests.unit.consumer.shard.test_shard_insights import TABLE, MemoryTable

DAY = "2026-12-03"
SHARD = "shardId-000000000001"


class FailsItsCommit(MemoryTable):
    """A table whose first commit (the conditional PutItem) raises ``error``, after the
    segment's cells are written: a worker that dies there, or a throttled table."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error: Exception | None = error

    async def put_item(self, **kwargs: Any) -> dict[str, Any]:
        error, self.error = self.error, None
        if error is not None:
            raise error
        return await super().put_item(**kwargs)


def segment(stored: int, dead: int) -> Segment:
    """300 readings of 300 devices (a cell each): the first ``stored`` stored, the next
    ``dead`` dead-lettered — what a batch's write made of them this time."""
    spec = FEEDS["telemax"].insights
    assert spec is not None
    entries = []
    for n in range(stored + dead):
        item = FEEDS["telemax"].to_item(
            orjson.dumps(reading(f"HW-{n:04d}", f"{DAY}T10:00:{n % 60:02d}Z", Data2=n))
        )
        letter = n >= stored
        fact = None if letter else spec.fact_of(item)
        entries.append(Entry((str(1000 + n), 0), "", b"", letter, fact, None))
    return Segment(SHARD, tuple(entries))


@pytest.mark.parametrize("part_bytes", [1_000, codec.PART_BYTES])
async def test_the_reader_merges_only_the_parts_of_the_attempt_that_committed(
    part_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt at a segment writes its cells and dies before its commit; the next,
    of the same segment (same first, same end), writes fewer parts — a record stored the
    first time was dead-lettered this time (or the encoding changed with an upgrade) — and
    commits. The first attempt's parts beyond the second's are still in the table: the
    reader must not count them."""
    monkeypatch.setattr(codec, "PART_BYTES", part_bytes)
    spec = FEEDS["telemax"].insights
    assert spec is not None
    db = FailsItsCommit(RuntimeError("the worker died before its commit"))
    table: Any = db
    wire = InsightsWire(table, TABLE, "telemax", spec, 3600)
    first, second = segment(300, 0), segment(150, 150)
    assert first.first == second.first and first.last == second.last
    with pytest.raises(RuntimeError):
        await wire.commit(first)
    assert await wire.commit(second) is None, "committed"
    cells, merged = await read_cells(table, TABLE, "telemax", [DAY])
    assert merged == 1
    expected = Partial(spec)
    add_segment_facts(expected, second)
    assert {k: c.count for k, c in cells.items()} == {k: c.count for k, c in expected.cells.items()}
    assert sum(c.count for c in cells.values()) == 150


def add_segment_facts(partial: Partial, segment: Segment) -> None:
    partial.add_facts(
        [(entry.fact, None) for entry in segment.entries if isinstance(entry, Entry) and entry.fact]
    )


@pytest.mark.parametrize(
    ("sort_key", "parts"),
    [
        ("shardId-1#0001-000000#0009-000000#a0f3c2b1d4e5#0000", ("shardId-1", "0001-000000",
         "0009-000000", "a0f3c2b1d4e5")),
        ("shardId-1#0001-000000#0009-000000#0002", ("shardId-1", "0001-000000", "0009-000000",
         None)),
    ],
    ids=["an attempt's", "an earlier version's"],
)  # fmt: skip
def test_a_parts_sort_key_names_its_segment_and_attempt(
    sort_key: str, parts: tuple[str, str, str, str | None]
) -> None:
    assert part_of(sort_key) == parts


async def test_segments_an_earlier_version_committed_without_an_attempt_are_read() -> None:
    """An earlier version's data items (no attempt in their key) and commit (no attempt)
    beside this version's: both segments are merged."""
    spec = FEEDS["telemax"].insights
    assert spec is not None
    db = MemoryTable()
    table: Any = db
    old = segment(40, 0)
    partial = Partial(spec)
    add_segment_facts(partial, old)
    first, end = position_name(old.first), position_name(old.last)
    for n, part in enumerate(codec.parts_by_day(partial.cells)[DAY]):
        db.items[(f"D#telemax#{DAY}", f"{SHARD}#{first}#{end}#{n:04d}")] = {
            "pk": {"S": f"D#telemax#{DAY}"},
            "sk": {"S": f"{SHARD}#{first}#{end}#{n:04d}"},
            "cells": {"B": part},
        }
    db.items[(f"C#telemax#{SHARD}", first)] = {
        **commit_key("telemax", SHARD, old.first),
        "end": {"S": end},
        "records": {"N": "40"},
    }
    later = Segment(SHARD, tuple(shifted(segment(10, 0), 1000)), follows_ours=True)
    assert await InsightsWire(table, TABLE, "telemax", spec, 3600).commit(later) is None
    cells, merged = await read_cells(table, TABLE, "telemax", [DAY])
    assert merged == 2
    assert sum(c.count for c in cells.values()) == 50


async def test_a_retried_commit_writes_under_the_same_attempt_leaving_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A throttled commit is retried (the sink sends the segment again): the retry writes
    its cells over the first try's — the same attempt, the same keys —, so a throttled table
    does not gather a set of parts no commit names with each retry."""
    monkeypatch.setattr(codec, "PART_BYTES", 1_000)
    spec = FEEDS["telemax"].insights
    assert spec is not None
    db = FailsItsCommit(client_error("ProvisionedThroughputExceededException", "slow down"))
    table: Any = db
    wire = InsightsWire(table, TABLE, "telemax", spec, 3600)
    one = segment(300, 0)
    with pytest.raises(ClientError):
        await wire.commit(one)
    parts = data_items(db)
    assert len(parts) > 1
    assert await wire.commit(one) is None, "committed"
    assert data_items(db) == parts, "the retry's parts are the first try's, rewritten"
    cells, merged = await read_cells(table, TABLE, "telemax", [DAY])
    assert merged == 1 and sum(c.count for c in cells.values()) == 300
    assert await wire.commit(one) is not None, "adopted, as committed already"
    assert data_items(db) == parts


def data_items(db: MemoryTable) -> set[str]:
    return {sk for pk, sk in db.items if pk.startswith("D#")}


class HoldsItsFirstWrite(MemoryTable):
    """A table that holds its first BatchWriteItem until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.held = False

    async def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
        if not self.held:
            self.held = True
            await self.go.wait()
        return await super().batch_write_item(**kwargs)


async def test_commits_in_flight_together_survive_the_kept_attempts_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kept attempts are cleared when they reach their bound, by whichever commit finds
    them there — while another commit is in flight, whose attempt goes with them."""
    monkeypatch.setattr(store, "MAX_ATTEMPTS_KEPT", 1)
    spec = FEEDS["telemax"].insights
    assert spec is not None
    db = HoldsItsFirstWrite()
    table: Any = db
    wire = InsightsWire(table, TABLE, "telemax", spec, 3600)
    first = asyncio.create_task(wire.commit(segment(10, 0)))
    await asyncio.sleep(0)  # (in flight, its attempt kept: the bound reached)
    later = Segment(SHARD, tuple(shifted(segment(10, 0), 5000)), follows_ours=True)
    assert await wire.commit(later) is None
    db.go.set()
    assert await first is None


def shifted(one: Segment, by: int) -> list[Entry]:
    return [
        Entry((str(int(e.position[0]) + by), 0), "", b"", False, e.fact)
        for e in one.entries
        if isinstance(e, Entry)
    ]
