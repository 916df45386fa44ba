"""The fleet backends are up and the worker drains a stream on them."""

from __future__ import annotations

import time

import pytest

from tests.support import Stack, keys_of, readings, wait_until

pytestmark = pytest.mark.timeout(60)


def test_one_worker_on_kinesalite_and_dynalite(fleet: Stack) -> None:
    fleet.setup(shards=2)
    produced = readings(500)
    fleet.put(produced)
    worker = fleet.worker("solo")
    wait_until(lambda: fleet.count() >= 500, 30, "500 items")
    assert keys_of(fleet.scan()) == {(r["hardwareID"], r["Timestamp"]) for r in produced}
    assert worker.stop() == 0


def test_a_small_in_flight_budget_bounds_memory_and_still_drains_everything(fleet: Stack) -> None:
    fleet.setup(shards=4)
    produced = readings(4000)
    fleet.put(produced)
    worker = fleet.worker("tight", TELEMAX_MAX_IN_FLIGHT_RECORDS="300")
    peak = 0.0
    while fleet.count() < 4000:
        peak = max(peak, worker.metrics().get("telemax_records_in_flight", 0))
        time.sleep(0.05)
        assert worker.proc.poll() is None
    assert keys_of(fleet.scan()) == {(r["hardwareID"], r["Timestamp"]) for r in produced}
    assert 0 < peak <= 300, "never more records in memory than the budget"
    assert worker.stop() == 0
