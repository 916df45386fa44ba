"""Self-fencing and iterator expiry, on kinesalite + dynalite."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.local import WorkerProcess
from tests.fleet.conftest import LEASE_DURATION_S, Emulator
from tests.support import Stack, readings, wait_until, worker_events

pytestmark = pytest.mark.timeout(120)


def ready(worker: WorkerProcess) -> bool:
    try:
        url = f"http://127.0.0.1:{worker.metrics_port}/readyz"
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def owners(fleet: Stack) -> list[str]:
    """The owners named in the lease table, sorted; a lease between owners counts as "-"."""
    return sorted(owner or "-" for owner in fleet.owners().values())


def test_a_worker_cut_off_from_dynamodb_fences_itself_before_a_peer_takes_over(
    fleet: Stack,
) -> None:
    fleet.setup(shards=2)
    with FaultProxy(fleet.env["AWS_ENDPOINT_URL_DYNAMODB"]) as proxy:
        cut = fleet.worker("cut", AWS_ENDPOINT_URL_DYNAMODB=proxy.endpoint)
        wait_until(lambda: set(fleet.owners().values()) == {"cut"}, 20, "cut owns both shards")
        peer = fleet.worker("peer")
        wait_until(lambda: owners(fleet) == ["cut", "peer"], 20, "one shard each")
        (shard,) = [s for s, owner in fleet.owners().items() if owner == "cut"]
        fleet.put(readings(200))

        partitioned_at = time.time()
        proxy.set_rules([Rule("*", "blackhole")])  # a partition: requests hang
        wait_until(lambda: fleet.owners()[shard] == "peer", 3 * LEASE_DURATION_S, "peer takes")
        wait_until(lambda: not ready(cut), 15, "the cut worker reports not ready")
        wait_until(lambda: fleet.count() >= 200, 30, "every record stored by the peer")

        events = worker_events(cut, peer)
        fenced = [
            e
            for e in events
            if e.worker == "cut" and e.name == "lease_lost" and e.fields["shard_id"] == shard
        ]
        taken = [
            e
            for e in events
            if e.worker == "peer" and e.name == "lease_taken" and e.fields["shard_id"] == shard
        ]
        assert fenced, "the cut worker declared its lease lost"
        assert fenced[0].fields["why"] == "not_beaten_in_time"
        assert taken and taken[0].fields["reason"] == "granted"
        assert partitioned_at < fenced[0].at < taken[0].at, "fenced before the peer took over"
        assert not [e for e in events if e.worker == "peer" and e.name == "lease_lost"]

        proxy.set_rules([])  # the network comes back: ready again, and it takes work again
        wait_until(lambda: ready(cut), 30, "the cut worker ready again")
        wait_until(lambda: owners(fleet) == ["cut", "peer"], 30, "rebalanced")
        assert cut.stop() == 0
        assert peer.stop() == 0


def test_an_expired_iterator_is_rebuilt_after_the_last_delivered_record(
    fleet: Stack, kinesalite: Emulator
) -> None:
    fleet.setup(shards=1)
    fleet.put(readings(150))
    worker = fleet.worker("w1")
    wait_until(lambda: fleet.count() >= 150, 30, "first 150 items")
    expired = 'telemax_aws_errors_total{api="GetRecords",error="ExpiredIteratorException"}'

    def expiry_counted() -> bool:
        text = urllib.request.urlopen(worker.metrics_url, timeout=2).read().decode()
        return expired in text

    # Every iterator in hand is older than 300 s after a jump, and the caught-up worker keeps
    # polling with it. A GetRecords that was inside kinesalite during the jump can come back
    # with a fresh iterator, though: then jump again (the clock only moves forward).
    for _ in range(3):
        kinesalite.jump_clock()
        try:
            wait_until(expiry_counted, 5, "the expired iterator met and counted")
            break
        except AssertionError:
            continue
    assert expiry_counted(), "the worker met a real ExpiredIteratorException"

    fleet.put(readings(150, offset=150))
    wait_until(lambda: fleet.count() >= 300, 30, "all 300 items")
    seen = worker.metrics()
    assert seen["telemax_records_received_total"] == 300, "nothing read twice, nothing skipped"
    assert worker.stop() == 0
