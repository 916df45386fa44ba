"""The fleet backends are up and the worker drains a stream on them."""

from __future__ import annotations

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
