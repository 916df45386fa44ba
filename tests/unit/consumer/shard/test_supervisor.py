"""ShardSupervisor: one consumer per lease held, every consumer under a lease held (DESIGN §3.9).

The decision is a pure function (a table of cases); the supervisor applies it after every
change. A hand-back (the leader wants a lease back) stops one consumer gracefully: it drains,
checkpoints and releases its lease. Process-level scenarios are in test_worker_core.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from consumer.lease.held import HeldLease
from consumer.lease.model import SHARD_END
from consumer.shard.reader import Fetched
from consumer.shard.supervisor import Changes, Running, ShardSupervisor, reconcile
from consumer.testing import FakeKinesis, LeaseTable, client_error, lease, reading
from kernel.errors import ConfigError
from tests.unit.consumer.shard.test_shard_consumer import Shop, beat_forever

A1, A2, B1 = object(), object(), object()  # holds: A1 and A2 are two holds of lease A


@pytest.mark.parametrize(
    ("held", "running", "stopping", "expected"),
    [
        pytest.param({}, {}, False, Changes((), ()), id="nothing"),
        pytest.param({"A": A1}, {}, False, Changes(("A",), ()), id="new-lease-gets-a-consumer"),
        pytest.param(
            {"A": A1}, {"A": Running(A1, False)}, False, Changes((), ()), id="in-line-stays"
        ),
        pytest.param(
            {}, {"A": Running(A1, False)}, False, Changes((), ("A",)), id="lost-lease-cancelled"
        ),
        pytest.param(
            {}, {"A": Running(A1, True)}, False, Changes((), ()), id="finishing-not-cancelled"
        ),
        pytest.param(
            {"A": A2},
            {"A": Running(A1, False)},
            False,
            Changes((), ("A",)),
            id="replaced-hold-old-consumer-cancelled-new-waits",
        ),
        pytest.param(
            {"A": A2},
            {"A": Running(A1, True)},
            False,
            Changes((), ()),
            id="taken-back-while-releasing-waits-for-the-old-task",
        ),
        pytest.param(
            {"A": A1, "B": B1},
            {"A": Running(A1, False)},
            True,
            Changes((), ()),
            id="stopping-starts-nothing",
        ),
        pytest.param(
            {"B": B1},
            {"A": Running(A1, False)},
            True,
            Changes((), ("A",)),
            id="stopping-still-cancels-lost",
        ),
        pytest.param(
            {"B": B1, "A": A1},
            {"C": Running(object(), False)},
            False,
            Changes(("A", "B"), ("C",)),
            id="several-sorted",
        ),
    ],
)
def test_reconcile(
    held: dict[str, object],
    running: dict[str, Running[object]],
    stopping: bool,
    expected: Changes,
) -> None:
    assert reconcile(held, running, stopping=stopping) == expected


def test_after_reconciling_every_hold_has_one_consumer() -> None:
    """Applying the changes, then letting the cancelled tasks end, reaches the invariant."""
    held = {"A": A2, "B": B1}
    running = {"A": Running(A1, False), "C": Running(object(), False)}
    for _ in range(3):  # reconcile runs again whenever a task ends
        changes = reconcile(held, running, stopping=False)
        for key in changes.cancel:
            del running[key]  # the cancelled task ends
        for key in changes.start:
            running[key] = Running(held[key], False)
    assert {key: task.hold for key, task in running.items()} == held


# --- hand-backs: the leader wants a lease back ----------------------------------------------


class Supervised:
    """A supervisor over leases A and B of an in-memory stream, with a release that behaves
    as the coordinator's: the lease stays held (``releasing``, no consumer) until released."""

    def __init__(self, *, a_closed: bool = False) -> None:
        self.kinesis = FakeKinesis()
        self.kinesis.add_shard("A", closed=a_closed)
        self.kinesis.add_shard("B")  # open and empty: its consumer idles
        self.ids = {f"a-{n}" for n in range(5)}
        for hardware_id in sorted(self.ids):
            self.kinesis.put("A", reading(hardware_id))
        self.table = LeaseTable([lease("A", owner="me"), lease("B", owner="me")])
        self.shop = Shop(self.kinesis, self.table, "A")
        loop, liveness = asyncio.get_running_loop(), self.shop.liveness
        self.holds = {
            key: HeldLease(self.table[key], self.table, liveness=liveness, clock=loop.time)
            for key in ("A", "B")
        }
        self.released: list[tuple[str, str]] = []
        self.supervisor = ShardSupervisor(
            self.shop.context, leases=self.consumable, release=self.release
        )

    def consumable(self) -> dict[str, HeldLease]:
        return {k: h for k, h in self.holds.items() if not h.releasing and h.valid()}

    async def release(self, key: str, why: str) -> None:
        self.released.append((key, why))
        hold = self.holds[key]
        hold.releasing = True
        try:
            await hold.release()
        finally:
            del self.holds[key]
            self.supervisor.reconcile()

    def running(self) -> set[str]:
        return {key for key, task in self.supervisor.tasks.items() if not task.done()}

    @asynccontextmanager
    async def run(self) -> AsyncIterator[Supervised]:
        beats = asyncio.create_task(beat_forever(self.shop.liveness))
        task = asyncio.create_task(self.supervisor.run())
        try:
            await self.supervisor.ready.wait()
            yield self
        finally:
            self.supervisor.close()
            await task
            beats.cancel()
            await asyncio.gather(beats, return_exceptions=True)


async def until(condition: Callable[[], bool], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, f"not within {limit} s: {what}"
        await asyncio.sleep(0.05)


@pytest.mark.looptime
async def test_a_consumer_handed_back_drains_checkpoints_and_releases() -> None:
    s = Supervised()
    throttled = client_error("ProvisionedThroughputExceededException")
    s.shop.writer.script = [throttled] * 4  # the batch in hand takes a few seconds to land
    async with s.run():
        await until(lambda: bool(s.shop.writer.calls), 10, "A's batch being written")
        assert s.shop.stored() == set(), "asked back while its batch is in hand"
        assert s.supervisor.hand_back("A") is True
        await until(lambda: "A" not in s.running(), 30, "A's consumer ended")
        assert s.shop.stored() >= s.ids, "the batch in hand was finished"
        last = s.kinesis.shards["A"].records[-1]["SequenceNumber"]
        assert (s.table["A"].checkpoint, s.table["A"].owner) == (last, None)
        ops = [w.op for w in s.table.writes if w.key == "A"]
        assert ops[-2:] == ["checkpoint", "release"]
        assert s.released == [("A", "requested")]
        assert s.running() == {"B"}, "the other consumer goes on"
        assert s.table["B"].owner == "me"


@pytest.mark.looptime
async def test_hand_back_without_a_consumer_answers_false() -> None:
    s = Supervised()
    async with s.run():
        await until(lambda: s.running() == {"A", "B"}, 5, "both consumers running")
        assert s.supervisor.hand_back("X") is False
        assert s.supervisor.hand_back("A") is True
        await until(lambda: "A" not in s.running(), 30, "A's consumer ended")
        assert s.supervisor.hand_back("A") is False, "released and gone: the caller releases"
    assert s.released == [("A", "requested")]


@pytest.mark.looptime
async def test_a_finishing_consumer_is_not_stopped_twice() -> None:
    """A's shard ended and its release is under way when the leader asks for it back: the
    consumer releases it once, as a shard end, and the hand-back is answered True."""
    s = Supervised(a_closed=True)
    s.table.latency["release"] = 3.0
    async with s.run():
        await until(lambda: bool(s.released), 30, "A's release under way")
        assert "A" in s.running()
        assert s.supervisor.hand_back("A") is True
        assert s.supervisor.hand_back("A") is True
        await until(lambda: "A" not in s.running(), 30, "A's consumer ended")
    assert s.released == [("A", "shard_end")]
    assert (s.table["A"].checkpoint, s.table["A"].owner) == (SHARD_END, None)
    assert [w.op for w in s.table.writes if w.key == "A"].count("release") == 1


@pytest.mark.looptime
async def test_a_consumer_asked_back_twice_releases_once() -> None:
    s = Supervised()
    async with s.run():
        await until(lambda: s.shop.stored() >= s.ids, 10, "A's records stored")
        assert s.supervisor.hand_back("A") is True
        assert s.supervisor.hand_back("A") is True
        await until(lambda: "A" not in s.running(), 30, "A's consumer ended")
    assert s.released == [("A", "requested")]


class RefusedReader:
    """A reader whose service refuses it for good (a missing permission)."""

    def __init__(self) -> None:
        self.closed = False

    async def fetch_next(self, due: Callable[[], float | None] = lambda: None) -> Fetched:
        raise ConfigError("SubscribeToShard on A: AccessDeniedException: not authorized")

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.looptime
async def test_a_fatal_reader_error_is_reported_not_retried_and_the_lease_let_go() -> None:
    s = Supervised()
    fatal: list[str] = []
    readers: list[RefusedReader] = []

    def refused(shard_id: str, checkpoint: str) -> RefusedReader:
        readers.append(RefusedReader())
        return readers[-1]

    def stopping(error: ConfigError) -> bool:
        fatal.append(str(error))
        return False  # the worker stops

    context = dataclasses.replace(s.shop.context, make_reader=refused, on_config_error=stopping)
    s.supervisor = ShardSupervisor(context, leases=s.consumable, release=s.release)
    async with s.run():
        await until(lambda: not s.running() and len(fatal) == 2, 30, "both consumers ended")
        await asyncio.sleep(60)  # no retry loop: nothing more comes
    assert fatal == ["SubscribeToShard on A: AccessDeniedException: not authorized"] * 2
    assert len(readers) == 2 and all(r.closed for r in readers)
    assert sorted(s.released) == [("A", "requested"), ("B", "requested")]
