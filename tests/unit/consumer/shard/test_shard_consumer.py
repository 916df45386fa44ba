"""ShardConsumer in process: checkpoints only after the records are durable, never once the
lease is lost; the shard's end creates the children's leases before SHARD_END; a shard gone
past retention ends the same way; KPL copies routed to another shard are dropped and counted.
Virtual loop time (looptime), an in-memory lease table and Kinesis, a scripted writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import pytest
import structlog

from consumer.feeds import telemax
from consumer.lease.held import HeldLease, Liveness
from consumer.lease.model import SHARD_END, TRIM_HORIZON
from consumer.metrics import Metrics
from consumer.pipeline import deadletter
from consumer.pipeline.stage import WriteStage
from consumer.pipeline.store import Store
from consumer.pipeline.table import BatchSink
from consumer.shard.budget import RecordBudget
from consumer.shard.discovery import Shard
from consumer.shard.lifecycle import Reason, State
from consumer.shard.processing import PARENT_POLL_S, ShardConsumer, ShardContext, StreamNotFound
from consumer.shard.reader import Fetched, ShardReader
from consumer.testing import (
    GET_SHARD_ITERATOR,
    FakeKinesis,
    LeaseTable,
    ScriptedWriter,
    client_error,
    lease,
    reading,
)
from tests.unit.kernel.test_kpl import aggregate_with_hash_keys

pytestmark = pytest.mark.looptime

DURATION = 10.0
MARGIN = 1.0


class Shop:
    """One shard consumer's world: Kinesis, the lease table, the tables it writes."""

    def __init__(self, kinesis: FakeKinesis, table: LeaseTable, shard_id: str = "P") -> None:
        self.kinesis = kinesis
        self.table = table
        self.writer = ScriptedWriter()
        self.metrics = Metrics("s")
        self.created: list[tuple[float, str]] = []  # (loop time, child) in creation order
        self.stream_alive = True
        loop = asyncio.get_running_loop()
        self.liveness = Liveness(duration=DURATION, margin=MARGIN, clock=loop.time)
        self.liveness.renewed(loop.time())  # the worker's last beat was answered just now
        self.held = HeldLease(table[shard_id], table, liveness=self.liveness, clock=loop.time)
        self.parents: Callable[[frozenset[str]], Awaitable[bool]] = self._no_parents_pending
        self.context = ShardContext(
            stream="s",
            worker_id="me",
            handler=telemax.to_item,
            stage=WriteStage(
                Store(
                    self._sink("TELEMAX", telemax.KEY_NAMES),
                    self._sink("dlq", deadletter.KEY_NAMES),
                    self.metrics,
                )
            ),
            metrics=self.metrics,
            checkpoint_interval_s=1.0,
            parents_done=self._parents_done,
            make_reader=self._reader,
            budget=RecordBudget(10_000),
            create_children=self._create_children,
            stream_exists=self._stream_exists,
            clock=loop.time,
        )

    def _sink(self, table: str, keys: Sequence[str]) -> BatchSink:
        return BatchSink(
            self.writer, table, keys, concurrency=asyncio.Semaphore(4), metrics=self.metrics
        )

    def _reader(self, shard_id: str, checkpoint: str) -> ShardReader:
        loop = asyncio.get_running_loop()
        return ShardReader(
            self.kinesis,  # type: ignore[arg-type]
            "s",
            shard_id,
            checkpoint,
            metrics=self.metrics,
            idle_poll_s=0.5,
            clock=loop.time,
        )

    async def _create_children(self, parent: str, children: Sequence[Shard]) -> None:
        for child in children:
            await self.table.create(child.shard_id, TRIM_HORIZON, child.parents, child.hash_range)
            self.created.append((asyncio.get_running_loop().time(), child.shard_id))

    async def _stream_exists(self) -> bool:
        return self.stream_alive

    async def _parents_done(self, parents: frozenset[str]) -> bool:
        return await self.parents(parents)

    async def _no_parents_pending(self, parents: frozenset[str]) -> bool:
        return True

    def stored(self) -> set[str]:
        return {key[0] for (table, key) in self.writer.stored if table == "TELEMAX"}

    def counter(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"stream": "s", **labels})
        return value or 0.0

    async def run(self, stop: asyncio.Event | None = None) -> Reason:
        return await ShardConsumer(self.held, self.context).run(stop or asyncio.Event())


def stream(closed: bool, count: int = 10) -> tuple[FakeKinesis, LeaseTable, set[str]]:
    kinesis = FakeKinesis()
    kinesis.add_shard("P", closed=closed)
    kinesis.add_shard("C1", "P").hash_range = (0, 2**127 - 1)
    kinesis.add_shard("C2", "P").hash_range = (2**127, 2**128 - 1)
    ids = {f"r-{n:03d}" for n in range(count)}
    for hardware_id in sorted(ids):
        kinesis.put("P", reading(hardware_id))
    table = LeaseTable([lease("P", owner="me", counter=1)])
    return kinesis, table, ids


async def test_no_checkpoint_before_the_records_are_durable() -> None:
    kinesis, table, ids = stream(closed=True)
    shop = Shop(kinesis, table)
    throttled = client_error("ProvisionedThroughputExceededException")
    shop.writer.script = [throttled] * 8  # about 6 s of backoff before the write lands
    checkpoints_while_not_durable = []

    original = table.checkpoint

    async def watched(*args: Any, **kwargs: Any) -> Any:
        if not shop.stored() >= ids:
            checkpoints_while_not_durable.append(args[1])
        return await original(*args, **kwargs)

    table.checkpoint = watched  # type: ignore[method-assign]
    beats = asyncio.create_task(beat_forever(shop.liveness))
    try:
        assert await shop.run() is Reason.SHARD_END
    finally:
        beats.cancel()
        await asyncio.gather(beats, return_exceptions=True)
    assert shop.stored() == ids
    assert checkpoints_while_not_durable == []
    assert table["P"].checkpoint == SHARD_END


async def test_no_checkpoint_once_the_lease_is_lost() -> None:
    kinesis, table, _ = stream(closed=False)
    shop = Shop(kinesis, table)
    shop.held.lost = True  # as the coordinator marks a lease it lost, mid-batch
    assert await shop.run() is Reason.LEASE_LOST
    assert [w.op for w in table.writes] == [], "nothing written under a lost lease"


async def test_children_leases_exist_before_shard_end_names_them() -> None:
    kinesis, table, _ = stream(closed=True)
    shop = Shop(kinesis, table)
    assert await shop.run() is Reason.SHARD_END
    ops = [(w.op, w.key) for w in table.writes]
    end = ops.index(("checkpoint", "P"), len(ops) - 1)
    assert {("create", "C1"), ("create", "C2")} <= set(ops[:end])
    assert table["P"].children == frozenset({"C1", "C2"})
    assert table["C1"].parents == frozenset({"P"})
    assert table["C2"].hash_range == (2**127, 2**128 - 1), "startingHashKey/endingHashKey"
    assert shop.counter("telemax_shards_ended_total") == 1


async def test_shard_end_is_retried_while_the_lease_table_throttles() -> None:
    kinesis, table, _ = stream(closed=True)
    shop = Shop(kinesis, table)
    loop = asyncio.get_running_loop()
    until = loop.time() + 5.0

    def throttle(op: str, key: str) -> BaseException | None:
        if op in ("create", "checkpoint") and loop.time() < until:
            return client_error("ProvisionedThroughputExceededException")
        return None

    table.fault = throttle
    beats = asyncio.create_task(beat_forever(shop.liveness))
    try:
        assert await shop.run() is Reason.SHARD_END
    finally:
        beats.cancel()
        await asyncio.gather(beats, return_exceptions=True)
    assert table["P"].checkpoint == SHARD_END
    assert loop.time() >= until


async def beat_forever(liveness: Liveness) -> None:
    """The worker's beats, answered at once: they keep every lease it holds valid."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(DURATION / 3)
        liveness.renewed(loop.time())


async def test_a_gone_shard_ends_counted_and_logged_once() -> None:
    kinesis, table, _ = stream(closed=True)
    kinesis.fault = lambda op, shard_id: client_error("ResourceNotFoundException")
    shop = Shop(kinesis, table)
    assert await shop.run() is Reason.SHARD_END
    assert table["P"].checkpoint == SHARD_END
    assert shop.counter("telemax_shards_gone_total") == 1
    assert len([call for call in kinesis.calls if call[1] == "GetShardIterator"]) == 1


async def test_a_deleted_stream_does_not_mark_its_shards_finished() -> None:
    """Every shard of a deleted stream answers ResourceNotFoundException: finishing them would
    make a new stream of the same name (whose shard ids start again) skip its shards."""
    kinesis, table, _ = stream(closed=False)
    kinesis.fault = lambda op, shard_id: client_error("ResourceNotFoundException")
    shop = Shop(kinesis, table)
    shop.stream_alive = False
    with pytest.raises(StreamNotFound):
        await shop.run()
    assert table["P"].checkpoint == TRIM_HORIZON
    assert shop.counter("telemax_shards_gone_total") == 0


async def test_kpl_copies_routed_to_another_shard_are_dropped_and_counted() -> None:
    kinesis = FakeKinesis()
    kinesis.add_shard("P", closed=False).hash_range = (0, 2**127 - 1)
    users: list[tuple[bytes, str, str | None]] = [
        (readings_bytes("in-1"), "a", str(5)),
        (readings_bytes("out-1"), "b", str(2**127)),  # a copy the KPL sent again elsewhere
        (readings_bytes("kept"), "c", None),  # no explicit hash key: kept
    ]
    kinesis.put("P", aggregate_with_hash_keys(users))
    table = LeaseTable([lease("P", owner="me", counter=1, hash_range=(0, 2**127 - 1))])
    shop = Shop(kinesis, table)
    stop = asyncio.Event()
    task = asyncio.create_task(shop.run(stop))
    await asyncio.sleep(3.0)
    stop.set()
    assert await task is Reason.REQUESTED
    assert shop.stored() == {"in-1", "kept"}
    assert shop.counter("telemax_records_skipped_total", reason="outside_hash_range") == 1


def readings_bytes(hardware_id: str) -> bytes:
    return orjson.dumps(reading(hardware_id))


# --- a child waits for its parents ----------------------------------------------------------


def child_stream() -> tuple[FakeKinesis, LeaseTable, set[str]]:
    """C, a child of P, with 3 records; C's lease names P as its parent."""
    kinesis = FakeKinesis()
    kinesis.add_shard("P", closed=True)
    kinesis.add_shard("C", "P")
    ids = {f"c-{n}" for n in range(3)}
    for hardware_id in sorted(ids):
        kinesis.put("C", reading(hardware_id))
    table = LeaseTable([lease("C", owner="me", counter=1, parents=frozenset({"P"}))])
    return kinesis, table, ids


async def test_a_child_waits_for_its_parents_polling_every_parent_poll() -> None:
    kinesis, table, ids = child_stream()
    shop = Shop(kinesis, table, "C")
    loop = asyncio.get_running_loop()
    asked: list[tuple[float, frozenset[str]]] = []

    async def ended_on_the_third_read(parents: frozenset[str]) -> bool:
        asked.append((loop.time(), parents))
        return len(asked) >= 3

    shop.parents = ended_on_the_third_read
    started = loop.time()
    stop = asyncio.Event()
    task = asyncio.create_task(shop.run(stop))
    await until_stored(shop, ids)
    stop.set()
    assert await task is Reason.REQUESTED
    assert [parents for _, parents in asked] == [frozenset({"P"})] * 3
    assert [round(at - started, 6) for at, _ in asked] == [0.0, PARENT_POLL_S, 2 * PARENT_POLL_S]
    first_read = kinesis.call_times(GET_SHARD_ITERATOR)[0]
    assert first_read >= asked[-1][0], "nothing read before the parents ended"


async def test_a_lease_without_parents_does_not_ask_about_them() -> None:
    kinesis, table, ids = stream(closed=False, count=3)
    shop = Shop(kinesis, table)
    asked: list[frozenset[str]] = []

    async def record(parents: frozenset[str]) -> bool:
        asked.append(parents)
        return True

    shop.parents = record
    stop = asyncio.Event()
    task = asyncio.create_task(shop.run(stop))
    await until_stored(shop, ids)
    stop.set()
    assert await task is Reason.REQUESTED
    assert asked == []


async def test_a_stop_while_waiting_for_parents_ends_without_reading_or_writing() -> None:
    kinesis, table, _ = child_stream()
    shop = Shop(kinesis, table, "C")

    async def never(parents: frozenset[str]) -> bool:
        return False

    shop.parents = never
    stop = asyncio.Event()
    consumer = ShardConsumer(shop.held, shop.context)
    task = asyncio.create_task(consumer.run(stop))
    await asyncio.sleep(3 * PARENT_POLL_S + 0.5)
    assert not task.done()
    stop.set()
    await asyncio.sleep(0)
    assert await task is Reason.REQUESTED
    assert consumer.lifecycle.state is State.DONE
    assert kinesis.calls == [], "nothing read"
    assert table.writes == [], "nothing written: no checkpoint of a shard never started"


async def test_a_failed_parent_read_is_logged_and_retried_never_a_crash() -> None:
    kinesis, table, ids = child_stream()
    shop = Shop(kinesis, table, "C")
    loop = asyncio.get_running_loop()
    asked: list[float] = []

    async def throttled_then_ended(parents: frozenset[str]) -> bool:
        asked.append(loop.time())
        if len(asked) <= 2:
            raise client_error("ProvisionedThroughputExceededException")
        return True

    shop.parents = throttled_then_ended
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logged:
        task = asyncio.create_task(shop.run(stop))
        await until_stored(shop, ids)
        stop.set()
        assert await task is Reason.REQUESTED
    failures = [e for e in logged if e["event"] == "parent_lease_read_failed"]
    assert len(failures) == 2
    assert all("ProvisionedThroughputExceeded" in e["error"] for e in failures)
    assert [round(b - a, 6) for a, b in itertools.pairwise(asked)] == [PARENT_POLL_S] * 2


async def until_stored(shop: Shop, ids: set[str], limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not shop.stored() >= ids:
        assert loop.time() < deadline, f"not stored within {limit} s"
        await asyncio.sleep(0.1)


async def test_an_idle_shard_checkpoints_its_last_batch_once_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader loops over empty answers without waking the consumer, but hands it an empty
    batch once a checkpoint is due: the last batch before a quiet spell is checkpointed within
    the checkpoint interval plus one idle pause, and only once."""
    kinesis, table, ids = stream(closed=False)
    shop = Shop(kinesis, table)
    batches: list[int] = []
    handle = ShardConsumer._handle

    async def counted(self: ShardConsumer, fetched: Any) -> None:
        batches.append(len(fetched.records))
        await handle(self, fetched)

    monkeypatch.setattr(ShardConsumer, "_handle", counted)
    started = asyncio.get_running_loop().time()
    async with consuming(shop):
        await asyncio.sleep(30)
        assert shop.stored() == ids
        checkpoints = [w for w in table.writes if w.op == "checkpoint"]
        assert len(checkpoints) == 1, "one checkpoint for the batch, none for the quiet spell"
        # the first batch is written at once; then the interval (1 s) plus one idle pause
        assert checkpoints[0].at - started <= 1.0 + 0.5 + 0.2
        assert table["P"].checkpoint == kinesis.shards["P"].records[-1]["SequenceNumber"]
        calls = kinesis.call_times()
        assert len(calls) >= 30 / 0.5, "the reader kept polling the quiet shard"
        assert batches == [len(ids), 0], "woken for the batch and for its checkpoint only"


async def test_a_record_after_a_quiet_spell_is_read_within_one_idle_pause() -> None:
    kinesis, table, _ = stream(closed=False, count=1)
    shop = Shop(kinesis, table)
    loop = asyncio.get_running_loop()
    async with consuming(shop):
        await asyncio.sleep(60)  # a quiet minute: the reader is at its longest pause
        kinesis.put("P", reading("late"))
        put_at = loop.time()
        while "late" not in shop.stored():
            await asyncio.sleep(0.01)
        assert loop.time() - put_at <= 0.5 + 0.02  # the idle pause this shop configures


@contextlib.asynccontextmanager
async def consuming(shop: Shop) -> AsyncIterator[None]:
    """The shop's consumer running with its worker's beats; on leaving, a graceful stop that
    must end it within a second, as REQUESTED."""
    stop = asyncio.Event()
    beats = asyncio.create_task(beat_forever(shop.liveness))
    consumer = asyncio.create_task(shop.run(stop))
    try:
        yield
        stop.set()
        assert await asyncio.wait_for(consumer, 1.0) is Reason.REQUESTED
    finally:
        consumer.cancel()
        beats.cancel()
        await asyncio.gather(consumer, beats, return_exceptions=True)


@pytest.mark.parametrize("new_records", [0, 3])
async def test_a_restart_at_the_checkpoint_redoes_nothing(new_records: int) -> None:
    """Resumed at its checkpoint, a shard reads the checkpointed record again (the reader reads
    *at* it) and neither stores it again nor writes the same checkpoint again."""
    kinesis, _, _ = stream(closed=False, count=5)
    done = kinesis.shards["P"].records[-1]["SequenceNumber"]
    table = LeaseTable([lease("P", owner="me", counter=1, checkpoint=done)])
    later = {f"s-{n}" for n in range(new_records)}
    for hardware_id in sorted(later):
        kinesis.put("P", reading(hardware_id))
    shop = Shop(kinesis, table)
    async with consuming(shop):
        await asyncio.sleep(10)
    assert shop.stored() == later
    checkpoints = [w for w in table.writes if w.op == "checkpoint"]
    assert len(checkpoints) == (1 if new_records else 0)


class _Batch(list[Any]):
    """A batch's records that a weak reference can watch."""


class _OneBatchThenQuiet:
    """A reader with one batch, then nothing: its next fetch waits until the test ends."""

    def __init__(self, records: list[Any]) -> None:
        self.batch: _Batch | None = _Batch(records)
        self.waiting = asyncio.Event()

    async def fetch_next(self, due: Callable[[], float | None] = lambda: None) -> Fetched:
        if self.batch is None:
            self.waiting.set()
            await asyncio.Event().wait()  # (until cancelled)
        batch, self.batch = self.batch, None
        assert batch is not None
        return Fetched(batch, 0, ended=False)

    async def aclose(self) -> None:
        pass


async def test_a_stored_batch_is_not_kept_while_the_next_is_awaited() -> None:
    """Once a batch is stored its budget is handed back, so the consumer must not keep it
    while it waits for the next: memory the budget does not count — a batch a shard, on
    every shard whose next grant is slow to come."""
    kinesis, table, ids = stream(closed=False, count=5)
    shop = Shop(kinesis, table)
    reader = _OneBatchThenQuiet([dict(record) for record in kinesis.shards["P"].records])
    assert reader.batch is not None
    watched = weakref.ref(reader.batch)
    shop.context = dataclasses.replace(shop.context, make_reader=lambda shard, at: reader)
    collecting = gc.isenabled()
    gc.disable()  # freed by its count of references, not by the collector's luck
    try:
        async with consuming(shop):
            await until_stored(shop, ids)
            await asyncio.wait_for(reader.waiting.wait(), 5)
            await asyncio.sleep(0.5)
            assert shop.context.budget.in_use == 0
            assert watched() is None, "the stored batch is still held"
    finally:
        if collecting:
            gc.enable()
