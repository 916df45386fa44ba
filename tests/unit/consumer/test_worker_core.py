"""The worker's concurrency core in process: coordinator, leader, supervisor, shard consumers
and shutdown together, on virtual loop time (looptime), in-memory lease and membership tables,
an in-memory Kinesis and a scripted batch writer. No processes, no emulators: the
interleavings are chosen here. A worker alone elects itself and assigns itself every lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.config import Settings
from consumer.fanout import FanOutError
from consumer.feeds import telemax
from consumer.lease.model import SHARD_END
from consumer.shard.reader import Fetched
from consumer.testing import (
    FakeKinesis,
    LeaseTable,
    MemberTable,
    ScriptedWriter,
    client_error,
    lease,
    reading,
)
from consumer.worker import Worker
from kernel import backoff
from kernel.aws import Clients
from kernel.errors import ConfigError

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
    def __init__(
        self,
        kinesis: FakeKinesis,
        table: LeaseTable,
        members: MemberTable | None = None,
        writer: ScriptedWriter | None = None,
        **overrides: Any,
    ) -> None:
        self.kinesis = kinesis
        self.table = table
        self.members = members or MemberTable()
        self.writer = writer or ScriptedWriter()
        clients = Clients(kinesis=kinesis, dynamodb=None, session=None)  # type: ignore[arg-type]
        self.worker = Worker(
            settings(**overrides),
            clients,
            telemax.to_item,
            clock=asyncio.get_running_loop().time,
            repository=table,
            members=self.members,
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


async def test_a_shard_end_under_throttling_ends_and_every_lease_held_has_a_consumer() -> None:
    """Case 2: shard end while the lease table throttles this lease's writes. The SHARD_END
    checkpoint and the release retry while beats keep the lease valid. Every lease held must
    have exactly one consumer; the shard must end and its children must be read."""
    kinesis, ids = split_stream()
    table = LeaseTable()
    loop = asyncio.get_running_loop()
    throttle_until = loop.time() + 12.0

    def throttle(op: str, key: str) -> BaseException | None:
        if key == "P" and op in ("checkpoint", "release") and loop.time() < throttle_until:
            return client_error("ProvisionedThroughputExceededException", status=400)
        return None

    table.fault = throttle
    table.latency["release"] = 1.0  # throttled answers come slowly: beats go on meanwhile
    async with running_worker(Harness(kinesis, table)) as h:
        await until(lambda: h.stored() >= ids, 60, "every record stored")
        await until(lambda: finished(table, "P"), 60, "P checkpointed SHARD_END")
        held = set(h.worker.coordinator.held)
        await until(lambda: held <= h.running(), 5, f"a consumer for every lease held {held}")
        assert "P" not in h.worker.coordinator.held or "P" in h.running()


async def test_shard_series_are_removed_when_the_shard_leaves() -> None:
    """Case 8: per-shard series go when the shard leaves this worker: at its end, handed
    back to the leader, or lost."""
    kinesis, ids = split_stream()
    table = LeaseTable()
    async with running_worker(Harness(kinesis, table)) as h:
        await until(lambda: h.stored() >= ids, 60, "every record stored")
        await until(lambda: finished(table, "P"), 30, "P ended")
        await until(lambda: "P" not in h.running(), 10, "P's consumer gone")
        assert h.series("P") == []
        assert h.series("C1") and h.series("C2"), "a shard being consumed has its series"
        # The leader asks for C1 back (as for a worker that joined): drained and released.
        assert await h.members.revoke(h.members["me"], frozenset({"C1"}))
        await until(lambda: "C1" not in h.running(), 5, "C1 handed back")
        assert h.series("C1") == []
        assert table["C1"].owner is None
        # C2 moved on (a bug, an operator): our next checkpoint is refused, the lease lost.
        table.items["C2"] = lease("C2", owner="peer", counter=table["C2"].counter + 1)
        fill(kinesis, "C2", 1, prefix="late-")
        await until(lambda: "C2" not in h.running(), 10, "C2 lost")
        assert h.series("C2") == []
        assert "C2" not in h.worker.coordinator.held


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
        ops = [w.op for w in table.writes if w.key == key]
        assert ops[:2] == ["create", "assign"], f"{key}: {ops}"
        assert ops[-2:] == ["checkpoint", "release"], f"{key}: {ops}"
        assert table[key].owner is None
        assert table[key].checkpoint == kinesis.shards[key].records[-1]["SequenceNumber"]
    # Then a last beat says so, and the leader resigns: the next one reassigns at once.
    assert h.members["me"].leaving
    assert h.members.leadership is not None and h.members.leadership.owner is None
    (leave_at,) = [at for at, op, key in h.members.calls if op == "release_leadership"]
    assert leave_at >= max(w.at for w in table.writes if w.op == "release")


async def test_shutdown_ends_by_its_deadline_when_the_lease_table_hangs() -> None:
    kinesis, ids = three_shards()
    table = LeaseTable()
    loop = asyncio.get_running_loop()
    h = Harness(kinesis, table, shutdown_grace_s=4.0)
    task = asyncio.create_task(h.worker.run())
    await until(lambda: h.stored() >= ids, 30, "every record stored")
    for op in ("checkpoint", "release", "get", "list", "assign", "create", "delete"):
        table.latency[op] = 1_000.0  # black-holed from now on
    h.worker.stop()
    stopped_at = loop.time()
    await asyncio.wait_for(task, timeout=30.0)
    ended_at = loop.time()
    assert ended_at - stopped_at <= 4.0 + 0.5, "one deadline for the whole shutdown"
    assert all(table[key].owner == "me" for key in "ABC"), "the releases never landed"
    beats = [at for at, op, key in h.members.calls if op == "beat" and key == "me"]
    assert len([at for at in beats if stopped_at < at <= ended_at]) >= 2, "beats on meanwhile"
    # The deadline cut the releases short, and the leaving beat after them: what the deadline
    # cuts short is not written. The leases are reassigned once our beats have stopped for a
    # lease duration, as after a SIGKILL.
    assert h.running() == set()
    assert not h.members["me"].leaving


async def test_no_lease_is_taken_once_the_shutdown_began() -> None:
    """A grant that arrives while the worker drains is never consumed: it is released at once,
    so that no lease names a worker that has gone."""
    kinesis, ids = three_shards()
    table = LeaseTable()
    h = Harness(kinesis, table)
    task = asyncio.create_task(h.worker.run())
    await until(lambda: h.stored() >= ids, 30, "every record stored")
    kinesis.add_shard("D")
    table.items["D"] = lease("D", owner="me", counter=1)  # as the leader assigns it
    table.latency["release"] = 3.0  # the drain takes a while: beats go on meanwhile
    h.worker.stop()
    await asyncio.sleep(0.1)
    assert await h.members.grant(h.members["me"], frozenset({"D"}))
    granted_at = asyncio.get_running_loop().time()
    await asyncio.wait_for(task, timeout=15.0)
    beats = [at for at, op, key in h.members.calls if op == "beat" and key == "me"]
    assert any(at > granted_at for at in beats[:-1]), "a beat answered with the grant"
    assert "D" not in h.worker.coordinator.held
    # Released (the release is sent at once) or, if it is still in flight when the worker
    # exits, left to the leader: the worker said it left, so the lease is reassigned at once.
    assert table["D"].owner is None or h.members["me"].leaving
    assert {op for _, op, key in table.calls if key == "D"} == {"get", "release"}
    assert not [call for call in kinesis.calls if call.shard_id == "D"], "never consumed"


async def test_a_worker_alone_elects_itself_and_assigns_itself_every_lease() -> None:
    kinesis, ids = three_shards()
    table = LeaseTable()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with running_worker(Harness(kinesis, table)) as h:
        await until(lambda: h.running() == {"A", "B", "C"}, 2.0, "a consumer for every shard")
        assert h.members.leadership is not None and h.members.leadership.owner == "me"
        assert h.worker.coordinator.leader.leading()
        assert {key: table[key].owner for key in "ABC"} == dict.fromkeys("ABC", "me")
        assert all(w.at - started <= 2.0 for w in table.writes if w.op == "assign")
        await until(lambda: h.stored() >= ids, 10, "every record stored")


async def test_ready_once_a_beat_was_answered_and_not_once_stopping() -> None:
    kinesis, _ = three_shards()
    members = MemberTable()
    members.latency["beat"] = 0.5
    h = Harness(kinesis, LeaseTable(), members)
    assert not h.worker.ready()
    task = asyncio.create_task(h.worker.run())
    await asyncio.sleep(0.25)
    assert not h.worker.ready(), "no beat answered yet"
    await until(h.worker.ready, 2, "ready")
    assert h.worker.coordinator.beats > 0
    h.worker.stop()
    assert not h.worker.ready()
    await asyncio.wait_for(task, timeout=15.0)


async def test_a_worker_that_joins_gets_its_share_through_graceful_hand_backs() -> None:
    """A second worker joins: the leader asks the first for half its leases back; each is
    drained, checkpointed and released before the newcomer starts on it, so no shard ever has
    two consumers and no record is read twice."""
    kinesis = FakeKinesis()
    ids: set[str] = set()
    for shard_id in ("A", "B", "C", "D"):
        kinesis.add_shard(shard_id)
        ids |= fill(kinesis, shard_id, 5)
    table, members, writer = LeaseTable(), MemberTable(), ScriptedWriter()
    first = Harness(kinesis, table, members, writer)
    second = Harness(kinesis, table, members, writer, worker_id="w2")
    overlaps: list[set[str]] = []

    async def watch() -> None:
        while True:
            if both := first.running() & second.running():
                overlaps.append(both)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        async with running_worker(first):
            await until(lambda: first.stored() >= ids, 10, "every record stored")
            async with running_worker(second):
                await until(
                    lambda: len(first.running()) == len(second.running()) == 2,
                    30,
                    "two shards each",
                )
                more = {
                    hardware_id
                    for shard_id in ("A", "B", "C", "D")
                    for hardware_id in fill(kinesis, shard_id, 3, prefix="more-")
                }
                await until(lambda: first.stored() >= more, 10, "later records stored")
                owners = sorted(table[key].owner or "" for key in "ABCD")
                assert owners == ["me", "me", "w2", "w2"]
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert overlaps == [], "a shard consumed by two workers at once"
    assert sum(writer.calls) == len(ids | more), "no record read twice"


async def test_a_configuration_error_met_while_consuming_stops_the_worker_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fan-out refused for good (a missing permission): the worker lets its leases go and
    stops with the one line, instead of retrying each shard forever."""
    from tests.unit.consumer.shard.test_supervisor import RefusedReader

    monkeypatch.setattr(Worker, "_make_reader", lambda self, shard_id, checkpoint: RefusedReader())
    kinesis, _ = three_shards()
    table = LeaseTable()
    h = Harness(kinesis, table)
    with pytest.raises(ConfigError, match=r"^SubscribeToShard on A: AccessDeniedException"):
        async with asyncio.timeout(30):
            await h.worker.run()
    assert all(table[key].owner is None for key in ("A", "B", "C"))


class SubscribeDenied:
    """A fan-out reader whose SubscribeToShard is denied for good (registration worked)."""

    async def fetch_next(self, due: Callable[[], float | None] = lambda: None) -> Fetched:
        raise FanOutError("SubscribeToShard on A: AccessDeniedException: not authorized")

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("retrieval", ["auto", "fanout"])
async def test_fanout_refused_while_consuming_falls_back_to_polling_only_under_auto(
    monkeypatch: pytest.MonkeyPatch, retrieval: str
) -> None:
    """A consumer registered but SubscribeToShard denied (an IAM policy naming the stream's
    ARN, not the consumer's): ``auto`` reads by polling from then on, every shard, with one
    warning; ``fanout`` stops the worker with the one line."""
    monkeypatch.setattr(
        Worker, "_fanout_reader", lambda self, shard_id, checkpoint: SubscribeDenied()
    )
    kinesis, ids = three_shards()
    table = LeaseTable()
    h = Harness(kinesis, table, retrieval=retrieval)
    h.worker._subscriber = object()  # type: ignore[assignment]  # fan-out registered
    if retrieval == "fanout":
        with pytest.raises(ConfigError, match=r"^SubscribeToShard on A: AccessDenied"):
            async with asyncio.timeout(30):
                await h.worker.run()
        return
    with capture_logs() as logs:
        async with running_worker(h):
            await until(lambda: h.stored() >= ids, 20, "every record stored by polling")
    fallbacks = [e for e in logs if e["event"] == "fanout_refused_reading_by_polling"]
    assert len(fallbacks) == 1, fallbacks
    assert "AccessDeniedException" in fallbacks[0]["error"]
