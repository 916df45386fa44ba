"""LeaseCoordinator in process: virtual loop time (looptime) and an in-memory lease table.

The invariant under test: no peer takes a lease while its owner still considers it valid,
whatever the Scan latency (DESIGN §3.10); lost races are return values; a take whose answer
was lost is recognised; releases under throttling neither block nor leave a lease behind.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import structlog

from consumer.config import Settings
from consumer.lease.coordinator import LeaseCoordinator
from consumer.lease.held import HeldLease
from consumer.lease.model import Lease
from consumer.metrics import Metrics
from consumer.testing import ANSWER_LOST, LeaseTable, client_error, lease

pytestmark = pytest.mark.looptime

DURATION = 10.0
SETTINGS = Settings(worker_id="me", lease_duration_s=DURATION)
MARGIN = SETTINGS.fence_margin_s


class Events:
    """What the coordinator reported to its consumers' supervisor: each change, with what it
    then held."""

    def __init__(self) -> None:
        self.coordinator: LeaseCoordinator | None = None
        self.seen: list[set[str]] = []

    def changed(self) -> None:  # the supervisor's single entry point (reconcile)
        assert self.coordinator is not None
        self.seen.append(set(self.coordinator.consumable()))


def coordinator_on(table: LeaseTable, events: Events | None = None) -> LeaseCoordinator:
    events = events or Events()
    coordinator = LeaseCoordinator(
        table,
        SETTINGS,
        Metrics("s"),
        on_change=events.changed,
        clock=asyncio.get_running_loop().time,
        rng=random.Random(7),
    )
    events.coordinator = coordinator
    return coordinator


def peer_holding(table: LeaseTable, key: str) -> HeldLease:
    """A peer worker's hold on ``key``, on the same clock as ours."""
    now = asyncio.get_running_loop().time()
    return HeldLease(
        table[key],
        table,
        acquired_at=now,
        duration=DURATION,
        margin=MARGIN,
        clock=asyncio.get_running_loop().time,
    )


async def passes_until_taken(coordinator: LeaseCoordinator, key: str, limit: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while key not in coordinator.held and loop.time() < deadline:
        await coordinator.take_pass()
        await asyncio.sleep(SETTINGS.take_interval_s)


def take_time(table: LeaseTable, key: str) -> float:
    (taken,) = [w.at for w in table.writes if w.op == "take" and w.key == key]
    return taken


@pytest.mark.parametrize("scan_s", [0.0, 2.0, 4.0, 9.0, 15.0])
async def test_no_take_while_the_owner_still_considers_its_lease_valid(scan_s: float) -> None:
    """A renewal written during a slow Scan is dated when the Scan completed (case 4).

    The peer renews while our Scan is in flight, then dies. Our next Scans are fast. Dating
    the counter to the start of the slow Scan would expire it up to ``scan_s`` early.
    """
    loop = asyncio.get_running_loop()
    table = LeaseTable([lease("s1", owner="peer", counter=1)])
    peer = peer_holding(table, "s1")
    ours = coordinator_on(table)
    await ours.take_pass()  # first sighting of counter 1
    await asyncio.sleep(1.0)

    async def renew_late_in_the_scan() -> None:
        dies_at = loop.time() + max(0.0, scan_s - 0.1)
        while loop.time() + SETTINGS.renew_interval_s < dies_at:
            await asyncio.sleep(SETTINGS.renew_interval_s)
            assert await peer.renew()
        await asyncio.sleep(dies_at - loop.time())
        assert await peer.renew()  # the last one: then the peer dies

    table.latency["list"] = scan_s
    renewal = asyncio.create_task(renew_late_in_the_scan())
    await ours.take_pass()
    await renewal
    table.latency["list"] = 0.0

    await passes_until_taken(ours, "s1", limit=4 * DURATION)
    taken_at = take_time(table, "s1")
    assert not peer.valid(taken_at), (
        f"taken at {taken_at:.2f}, peer valid until {peer.renewed_at + DURATION - MARGIN:.2f}"
    )
    # ... and still taken within one lease duration (+ a pass) of the peer's last renewal.
    assert taken_at <= peer.renewed_at + DURATION + scan_s + 2 * SETTINGS.take_interval_s
    assert loop.time() < 100


async def test_a_take_whose_answer_was_lost_is_recognised() -> None:
    """botocore retried a take whose first answer was lost: the retry's failed condition is
    not a lost race when the table names us with the counter our write produced (case 7)."""
    table = LeaseTable([lease("s1", owner=None, counter=4)])
    table.fault = lambda op, key: ANSWER_LOST if op == "take" else None
    events = Events()
    ours = coordinator_on(table, events)
    await ours.take_pass()
    assert "s1" in ours.held
    assert events.seen == [{"s1"}]
    assert ours.held["s1"].lease == table["s1"]
    assert table["s1"].owner == "me"


async def test_a_take_lost_to_a_peer_is_a_return_value() -> None:
    table = LeaseTable([lease("s1", owner=None, counter=4)])

    def peer_first(op: str, key: str) -> None:
        if op == "take" and table["s1"].owner is None:
            table.items["s1"] = Lease("s1", "peer", 5, "TRIM_HORIZON")

    table.fault = peer_first  # type: ignore[assignment]
    ours = coordinator_on(table)
    await ours.take_pass()
    assert ours.held == {}
    assert table["s1"].owner == "peer"


async def test_a_throttled_scan_fails_the_pass_and_fencing_still_runs() -> None:
    table = LeaseTable([lease("s1", owner=None, counter=1)])
    ours = coordinator_on(table)
    await ours.take_pass()
    assert "s1" in ours.held
    table.fault = lambda op, key: (
        client_error("ProvisionedThroughputExceededException") if op in ("list", "renew") else None
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(ours.run_takes(stop))
    await asyncio.sleep(DURATION)
    assert not ours.aws_ok
    assert "s1" not in ours.held, "not renewed for a lease duration: fenced"
    stop.set()
    await runner


async def test_a_lease_naming_us_that_we_do_not_hold_is_reclaimed() -> None:
    """After a restart with the same worker id, or a release that gave up."""
    table = LeaseTable([lease("s1", owner="me", counter=3)])
    ours = coordinator_on(table)
    await ours.take_pass()
    assert "s1" in ours.held
    (take,) = [w for w in table.writes if w.op == "take"]
    assert take.lease is not None and take.lease.owner_switches == 0, "not an owner switch"


async def test_a_release_under_throttling_holds_the_lease_until_it_ends() -> None:
    """While a release retries, the lease stays held (no take pass takes it back, nobody
    renews it); when the release gives up, a later pass takes it back."""
    loop = asyncio.get_running_loop()
    table = LeaseTable([lease("s1", owner=None, counter=1)])
    events = Events()
    ours = coordinator_on(table, events)
    await ours.take_pass()
    throttled_until = loop.time() + 30.0

    def throttle(op: str, key: str) -> BaseException | None:
        if op == "release" and loop.time() < throttled_until:
            return client_error("ProvisionedThroughputExceededException")
        return None

    table.fault = throttle  # type: ignore[assignment]
    table.latency["release"] = 1.0
    release = asyncio.create_task(ours.release("s1", "shard_end"))
    await asyncio.sleep(0.5)
    assert ours.held["s1"].releasing
    assert "s1" not in ours.consumable(), "no consumer under a lease being released"
    counter = table["s1"].counter
    await ours.take_pass()
    await ours.renew_pass()
    assert table["s1"].counter == counter, "neither taken back nor renewed meanwhile"
    await release
    assert "s1" not in ours.held, "gave up: the lease is no longer held"
    assert table["s1"].owner == "me"
    await ours.take_pass()
    assert "s1" in ours.consumable(), "taken back by the next pass, with a consumer"
    assert events.seen[-1] == {"s1"}


async def test_a_released_lease_is_taken_by_a_peer_at_once() -> None:
    table = LeaseTable([lease("s1", owner=None, counter=1)])
    ours = coordinator_on(table)
    await ours.take_pass()
    await ours.release("s1", "requested")
    assert table["s1"].owner is None and ours.held == {}
    peer = LeaseCoordinator(
        table,
        Settings(worker_id="peer", lease_duration_s=DURATION),
        Metrics("s"),
        on_change=lambda: None,
        clock=asyncio.get_running_loop().time,
        rng=random.Random(1),
    )
    await peer.take_pass()
    assert "s1" in peer.held, "no expiry wait"


async def test_a_lease_lost_by_a_refused_write_is_not_reported_as_not_renewed() -> None:
    """A peer stole the lease; our checkpoint was refused: that is a steal, not self-fencing."""
    table = LeaseTable([lease("s1", owner=None, counter=1)])
    ours = coordinator_on(table)
    await ours.take_pass()
    table.items["s1"] = lease("s1", owner="peer", counter=table["s1"].counter + 1)
    assert await ours.held["s1"].checkpoint("100") is False
    with structlog.testing.capture_logs() as logged:
        ours.fence()
    assert [(e["event"], e["why"]) for e in logged] == [("lease_lost", "write_refused")]
