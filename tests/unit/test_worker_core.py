"""The worker's concurrency core in process: coordinator, supervisor, shard consumers and
shutdown together, on virtual loop time (looptime), an in-memory lease table and Kinesis, and
a scripted batch writer. No processes, no emulators: the interleavings are chosen here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from consumer import backoff
from consumer.aws import Clients
from consumer.config import Settings
from consumer.lease.model import SHARD_END
from consumer.pipeline import telemax
from consumer.testing import (
    FakeKinesis,
    LeaseTable,
    ScriptedWriter,
    client_error,
    lease,
    reading,
)
from consumer.worker import Worker

pytestmark = pytest.mark.looptime


@pytest.fixture(autouse=True)
def same_jitter() -> None:
    """Backoff jitter from a seeded generator: each scenario runs the same way every time."""
    backoff._SHARED_RNG.seed(10)


DURATION = 10.0


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "stream": "s",
        "worker_id": "me",
        "lease_duration_s": DURATION,
        "metrics_port": 0,
        "shutdown_grace_s": 10.0,
        **overrides,
    }
    return Settings(**values)


class Harness:
    def __init__(self, kinesis: FakeKinesis, table: LeaseTable, **overrides: Any) -> None:
        self.kinesis = kinesis
        self.table = table
        self.writer = ScriptedWriter()
        clients = Clients(kinesis=kinesis, dynamodb=None, session=None)  # type: ignore[arg-type]
        self.worker = Worker(
            settings(**overrides),
            clients,
            telemax.to_item,
            clock=asyncio.get_running_loop().time,
            repository=table,  # type: ignore[arg-type]
            writer=self.writer,
        )

    def stored(self) -> set[str]:
        """hardwareIDs in the records table."""
        return {key[0] for (table, key) in self.writer.stored if table == "TELEMAX"}

    def running(self) -> set[str]:
        return {key for key, task in self.worker.supervisor.tasks.items() if not task.done()}

    def series(self, shard_id: str) -> list[str]:
        """Names of the metric samples that still carry this shard's label."""
        return [
            sample.name
            for family in self.worker.metrics.registry.collect()
            for sample in family.samples
            if sample.labels.get("shard") == shard_id
        ]


@asynccontextmanager
async def running_worker(harness: Harness, grace: float = 30.0) -> AsyncIterator[Harness]:
    task = asyncio.create_task(harness.worker.run())
    try:
        yield harness
    finally:
        harness.worker.stop()
        async with asyncio.timeout(grace):
            await task


async def until(condition: Callable[[], bool], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() >= deadline:
            raise AssertionError(f"not within {limit} s: {what}")
        await asyncio.sleep(0.25)


def finished(table: LeaseTable, key: str) -> bool:
    item = table.items.get(key)
    return item is not None and item.checkpoint == SHARD_END


def fill(kinesis: FakeKinesis, shard_id: str, count: int, prefix: str = "") -> set[str]:
    ids = {f"{prefix}{shard_id}-{n:04d}" for n in range(count)}
    for hardware_id in sorted(ids):
        kinesis.put(shard_id, reading(hardware_id))
    return ids


def split_stream() -> tuple[FakeKinesis, set[str]]:
    """P (closed, 20 records) split into C1 and C2 (open, 5 records each)."""
    kinesis = FakeKinesis()
    kinesis.add_shard("P", closed=True)
    kinesis.add_shard("C1", "P")
    kinesis.add_shard("C2", "P")
    ids = fill(kinesis, "P", 20) | fill(kinesis, "C1", 5) | fill(kinesis, "C2", 5)
    return kinesis, ids


async def test_a_lease_reclaimed_while_its_release_retries_still_gets_a_consumer() -> None:
    """Case 2: shard end while the lease table throttles this lease's writes. The SHARD_END
    checkpoint and the release retry; a take pass sees the lease still names us and takes
    it back. Every lease held must have exactly one consumer; the shard must end and its
    children must be read."""
    kinesis, ids = split_stream()
    table = LeaseTable()
    loop = asyncio.get_running_loop()
    throttle_until = loop.time() + 12.0

    def throttle(op: str, key: str) -> BaseException | None:
        if key == "P" and op in ("checkpoint", "release") and loop.time() < throttle_until:
            return client_error("ProvisionedThroughputExceededException", status=400)
        return None

    table.fault = throttle  # type: ignore[assignment]
    table.latency["release"] = 1.0  # throttled answers come slowly: take passes run meanwhile
    async with running_worker(Harness(kinesis, table)) as h:
        await until(lambda: h.stored() >= ids, 60, "every record stored")
        await until(lambda: finished(table, "P"), 60, "P checkpointed SHARD_END")
        held = set(h.worker.coordinator.held)
        await until(lambda: held <= h.running(), 5, f"a consumer for every lease held {held}")
        assert "P" not in h.worker.coordinator.held or "P" in h.running()


async def test_shard_series_are_removed_when_the_shard_leaves() -> None:
    """Case 8: per-shard series go when the shard leaves this worker (end or loss)."""
    kinesis, ids = split_stream()
    table = LeaseTable()
    async with running_worker(Harness(kinesis, table)) as h:
        await until(lambda: h.stored() >= ids, 60, "every record stored")
        await until(lambda: finished(table, "P"), 30, "P ended")
        await until(lambda: "P" not in h.running(), 10, "P's consumer gone")
        assert h.series("P") == []
        assert h.series("C1"), "a shard being consumed has its series"
        # A peer takes C1 (as after our lease expired): C1's series go too.
        table.items["C1"] = lease("C1", owner="peer", counter=table["C1"].counter + 1)
        await until(lambda: "C1" not in h.running(), 2 * DURATION, "C1 lost")
        assert h.series("C1") == []


async def test_a_shard_that_no_longer_exists_counts_as_ended() -> None:
    """Case 3: GetShardIterator answers ResourceNotFoundException (past retention): the
    shard is finished (SHARD_END), its children start, nothing crash-loops."""
    kinesis, _ = split_stream()
    children = fill(kinesis, "C1", 3) | fill(kinesis, "C2", 3)
    kinesis.fault = lambda op, shard_id: (
        client_error("ResourceNotFoundException", f"Shard {shard_id} does not exist")
        if shard_id == "P" and op in ("GetShardIterator", "GetRecords")
        else None
    )
    table = LeaseTable()
    async with running_worker(Harness(kinesis, table)) as h:
        await until(lambda: finished(table, "P"), 30, "P counted as ended")
        await until(lambda: h.stored() >= children, 30, "the children read")
        tries = [call for call in kinesis.calls if call[2] == "P"]
        assert len(tries) <= 2, f"asked for P once, not in a loop: {tries}"
        gone = h.worker.metrics.registry.get_sample_value(
            "telemax_shards_gone_total", {"stream": "s"}
        )
        assert gone == 1


def three_shards() -> tuple[FakeKinesis, set[str]]:
    kinesis = FakeKinesis()
    ids: set[str] = set()
    for shard_id in ("A", "B", "C"):
        kinesis.add_shard(shard_id)
        ids |= fill(kinesis, shard_id, 5)
    return kinesis, ids


async def test_shutdown_checkpoints_then_releases_every_lease() -> None:
    kinesis, ids = three_shards()
    table = LeaseTable()
    loop = asyncio.get_running_loop()
    h = Harness(kinesis, table)
    task = asyncio.create_task(h.worker.run())
    await until(lambda: h.stored() >= ids, 30, "every record stored")
    more = fill(kinesis, "A", 3, prefix="more-")
    await until(lambda: h.stored() >= more, 10, "the later records stored")
    h.worker.stop()  # before their checkpoint is due
    stopped_at = loop.time()
    await asyncio.wait_for(task, timeout=11.0)
    assert loop.time() - stopped_at < 2.0, "a healthy table drains at once"
    for key in ("A", "B", "C"):
        ops = [w.op for w in table.writes if w.key == key and w.op != "renew"]
        assert ops[-2:] == ["checkpoint", "release"], f"{key}: {ops}"
        assert table[key].owner is None
        assert table[key].checkpoint == kinesis.shards[key].records[-1]["SequenceNumber"]


async def test_shutdown_ends_by_its_deadline_when_the_lease_table_hangs() -> None:
    kinesis, ids = three_shards()
    table = LeaseTable()
    loop = asyncio.get_running_loop()
    h = Harness(kinesis, table, shutdown_grace_s=4.0)
    task = asyncio.create_task(h.worker.run())
    await until(lambda: h.stored() >= ids, 30, "every record stored")
    for op in ("checkpoint", "release", "renew", "list"):
        table.latency[op] = 1_000.0  # black-holed from now on
    h.worker.stop()
    stopped_at = loop.time()
    await asyncio.wait_for(task, timeout=30.0)
    assert loop.time() - stopped_at <= 4.0 + 0.5, "one deadline for the whole shutdown"
    assert all(table[key].owner == "me" for key in "ABC"), "left to expire"


async def test_no_lease_is_taken_once_the_shutdown_began() -> None:
    kinesis, ids = three_shards()
    table = LeaseTable()
    h = Harness(kinesis, table)
    task = asyncio.create_task(h.worker.run())
    await until(lambda: h.stored() >= ids, 30, "every record stored")
    kinesis.add_shard("D")
    await table.create("D", "TRIM_HORIZON", frozenset())
    table.latency["list"] = 3.0  # a take pass is in flight when the stop comes
    await asyncio.sleep(1.5)
    h.worker.stop()
    await asyncio.wait_for(task, timeout=15.0)
    assert table["D"].owner is None
    assert not [w for w in table.writes if w.key == "D" and w.op == "take"]
