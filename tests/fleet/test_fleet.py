"""Issue 3's scenarios with real worker processes on kinesalite + dynalite.

A 4-shard stream, three workers and a producer writing throughout. Times are measured from
the signal to the survivors' ``shard_processing`` log events (one host, one clock).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import pytest

from devkit.local import WorkerProcess, wait_for_http
from tests.fleet.conftest import LEASE_DURATION_S, RENEW_INTERVAL_S
from tests.support import BackgroundProducer, Stack, keys_of, wait_until, worker_events

pytestmark = pytest.mark.timeout(150)

SHARDS = 4


def counts(fleet: Stack) -> Counter[str | None]:
    return Counter(fleet.owners().values())


LEASE_WORDS = ("lease", "leader", "beat", "member", "shard_processing", "shard_stopped")


def wait_balanced(
    fleet: Stack, workers: list[WorkerProcess], timeout: float, what: str = "a balanced fleet"
) -> None:
    """:func:`balanced` within ``timeout``; else the failure says what the table and each
    worker held, and the workers' last lease events and warnings (an intermittent stall at
    start-up under a loaded CI left nothing else to read)."""
    try:
        wait_until(lambda: balanced(fleet, workers), timeout, what)
    except AssertionError as exc:
        said: dict[str, Any] = {}
        for worker in workers:
            try:
                said[worker.worker_id] = worker.metrics().get("telemax_leases_held")
            except Exception as why:  # a worker that died says so
                said[worker.worker_id] = repr(why)
        events = [
            f"{e.at:.3f} {e.worker} {e.name} {e.fields}"
            for e in worker_events(*workers)
            if any(word in e.name for word in LEASE_WORDS)
            or e.fields.get("level") in ("warning", "error")
        ]
        raise AssertionError(
            f"{exc}\ntable: {counts(fleet)}; workers say they hold: {said}\n"
            + "\n".join(events[-60:])
        ) from None


def balanced(fleet: Stack, workers: list[WorkerProcess]) -> bool:
    """Every shard owned by one of ``workers``, each within one of ceil(shards/workers), and
    every worker's own count (which notices a steal on its next pass) agrees with the table."""
    got = counts(fleet)
    ids = {w.worker_id for w in workers}
    target = -(-SHARDS // len(workers))
    return (
        sum(got.values()) == SHARDS
        and set(got) == ids
        and all(target - 1 <= got[i] <= target for i in ids)
        and all(w.metrics().get("telemax_leases_held") == got[w.worker_id] for w in workers)
    )


def lease_moves(worker: WorkerProcess) -> tuple[float, float, float]:
    seen = worker.metrics()
    return (
        seen.get("telemax_leases_taken_total", 0),
        seen.get("telemax_leases_stolen_total", 0),
        seen.get("telemax_leases_lost_total", 0),
    )


def start_fleet(fleet: Stack, n: int = 3) -> list[WorkerProcess]:
    """``n`` workers, returned once each one's probes server listens: the lease periods the
    tests count then measure the lease protocol, not an interpreter starting on a busy machine
    (`make test` runs three pytest processes on two cores; a start-up took seconds there)."""
    return listening([fleet.worker(f"w{i}") for i in range(1, n + 1)])


def listening(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    """``workers``, once each one's probes server listens."""
    for worker in workers:
        wait_for_http(worker.metrics_url, 30, worker.proc)
    return workers


def assert_everything_stored(fleet: Stack, produced: set[tuple[str, str]]) -> None:
    wait_until(lambda: fleet.count() >= len(produced), 60, f"{len(produced)} items")
    assert keys_of(fleet.scan()) == produced, "every produced key is in TELEMAX, nothing else"
    assert fleet.count(fleet.dlq_table) == 0


def moved_within(
    fleet: Stack, shards: set[str], survivors: list[WorkerProcess], since: float, limit: float
) -> float:
    """Wait until survivors process every shard in ``shards``; return the seconds it took."""

    def done() -> dict[str, float] | None:
        started = {
            str(e.fields["shard_id"]): e.at
            for e in worker_events(*survivors)
            if e.name == "shard_processing" and e.at >= since
        }
        return started if shards <= set(started) else None

    started = wait_until(done, limit + 10, f"survivors processing {sorted(shards)}")
    return float(max(started[s] for s in shards) - since)


def test_fleet_balances_within_three_lease_periods_then_stays_still(fleet: Stack) -> None:
    fleet.setup(shards=SHARDS)
    with BackgroundProducer(fleet) as producer:
        workers = start_fleet(fleet)
        started = time.monotonic()
        wait_balanced(fleet, workers, 3 * LEASE_DURATION_S)
        print(f"balanced after {time.monotonic() - started:.1f} s")

        owners = fleet.owners()
        before = [lease_moves(w) for w in workers]
        time.sleep(LEASE_DURATION_S * 1.5)
        assert fleet.owners() == owners, "a balanced fleet makes no ownership changes"
        assert [lease_moves(w) for w in workers] == before, "no takes, steals or losses"
        produced = producer.stop()
    assert_everything_stored(fleet, produced)
    assert all(w.stop() == 0 for w in workers)


def leader_of(workers: list[WorkerProcess]) -> WorkerProcess:
    """The worker that took leadership last (its ``leadership_taken`` log event)."""
    taken = [e for e in worker_events(*workers) if e.name == "leadership_taken"]
    name = max(taken, key=lambda e: e.at).worker
    return next(w for w in workers if w.worker_id == name)


@pytest.mark.parametrize("victim_is", ["busiest", "leader"])
def test_sigkill_fails_over_within_lease_duration_and_loses_nothing(
    fleet: Stack, victim_is: str
) -> None:
    """A killed leader is the slowest case: its leadership lapses first, then its successor
    reassigns (it read the members while the leader item stood still, so at once)."""
    fleet.setup(shards=SHARDS)
    with BackgroundProducer(fleet) as producer:
        workers = start_fleet(fleet)
        wait_balanced(fleet, workers, 3 * LEASE_DURATION_S)
        if victim_is == "leader":
            victim = leader_of(workers)
        else:
            victim = max(workers, key=lambda w: counts(fleet)[w.worker_id])
        survivors = [w for w in workers if w is not victim]
        orphans = {shard for shard, owner in fleet.owners().items() if owner == victim.worker_id}

        killed_at = time.time()
        victim.proc.kill()
        victim.wait(10)
        limit = LEASE_DURATION_S + RENEW_INTERVAL_S
        took = moved_within(fleet, orphans, survivors, killed_at, limit)
        print(f"fail-over ({victim_is}) of {sorted(orphans)}: {took:.2f} s (limit {limit} s)")
        assert took <= limit
        time.sleep(1)
        produced = producer.stop()
    assert_everything_stored(fleet, produced)
    assert balanced(fleet, survivors)
    assert all(w.stop() == 0 for w in survivors)


def test_sigterm_hands_over_within_two_seconds_and_loses_nothing(fleet: Stack) -> None:
    fleet.setup(shards=SHARDS)
    with BackgroundProducer(fleet) as producer:
        workers = start_fleet(fleet)
        wait_balanced(fleet, workers, 3 * LEASE_DURATION_S)
        leaver = max(workers, key=lambda w: counts(fleet)[w.worker_id])
        survivors = [w for w in workers if w is not leaver]
        handed = {shard for shard, owner in fleet.owners().items() if owner == leaver.worker_id}

        signalled_at = time.time()
        leaver.signal(signal.SIGTERM)
        assert leaver.wait(15) == 0
        took = moved_within(fleet, handed, survivors, signalled_at, 2.0)
        print(f"hand-over of {sorted(handed)} after SIGTERM: {took:.2f} s")
        assert took <= 2.0
        time.sleep(1)
        produced = producer.stop()
    assert_everything_stored(fleet, produced)
    assert all(w.stop() == 0 for w in survivors)


def test_scale_one_to_three_to_one_loses_nothing(fleet: Stack) -> None:
    fleet.setup(shards=SHARDS)
    with BackgroundProducer(fleet) as producer:
        first = fleet.worker("w1")
        wait_until(lambda: counts(fleet) == {"w1": SHARDS}, 20, "w1 owns every shard")
        extra = listening([fleet.worker("w2"), fleet.worker("w3")])
        everyone = [first, *extra]
        wait_balanced(fleet, everyone, 3 * LEASE_DURATION_S, "three-way split")
        for worker in extra:
            worker.signal(signal.SIGTERM)
        assert all(worker.wait(15) == 0 for worker in extra)
        wait_until(lambda: counts(fleet) == {"w1": SHARDS}, 10, "w1 owns every shard again")
        time.sleep(1)
        produced = producer.stop()
    assert_everything_stored(fleet, produced)
    assert first.stop() == 0
