"""The simulation's lease table charges capacity as DynamoDB does (tests/sim/store.py), and
the simulation runs end to end on a small fleet."""

from __future__ import annotations

import asyncio

import pytest

from consumer.lease.model import Lease
from consumer.testing import lease
from tests.sim.__main__ import main
from tests.sim.store import (
    PAGE_BYTES,
    ChargedTable,
    lease_size,
)

pytestmark = pytest.mark.looptime


def table_of(count: int, **kwargs: object) -> ChargedTable:
    return ChargedTable(
        [lease(f"shardId-{n:012d}", owner="w1", counter=1) for n in range(count)],
        **kwargs,  # type: ignore[arg-type]
    )


def test_lease_size_counts_names_and_values() -> None:
    bare = Lease("shardId-000000000001", None, 0, "TRIM_HORIZON")
    owned = Lease("shardId-000000000001", "worker-1", 0, "TRIM_HORIZON")
    assert lease_size(owned) - lease_size(bare) == len("leaseOwner") + len("worker-1")
    assert 100 < lease_size(bare) < 200


@pytest.mark.parametrize(
    ("count", "consistent", "expected"),
    [
        pytest.param(1, True, 1.0, id="one-small-item-one-unit"),
        pytest.param(1, False, 0.5, id="eventually-consistent-half"),
        pytest.param(100, True, None, id="summed-sizes-per-4kb"),
    ],
)
async def test_scan_is_charged_on_summed_item_sizes(
    count: int, consistent: bool, expected: float | None
) -> None:
    table = table_of(count, partitions=1)
    await table.scan(consistent=consistent)
    total = sum(table.usage.reads.values())
    if expected is None:
        size = sum(lease_size(item) for item in table.items.values())
        expected = float(-(-size // 4096))
    assert total == expected


async def test_writes_are_charged_per_kb_even_when_the_condition_fails() -> None:
    table = table_of(1, partitions=1)
    stale = lease("shardId-000000000000", owner="w1", counter=0)
    assert await table.renew(stale) is None  # wrong counter: refused, still charged
    assert await table.renew(table["shardId-000000000000"]) is not None
    assert sum(table.usage.writes.values()) == 2.0
    assert table.usage.requests["renew"] == 2


async def test_a_partition_over_its_limit_throttles() -> None:
    table = table_of(1, partitions=1, throttle=True)
    current = table["shardId-000000000000"]
    for _ in range(1000):  # 1,000 write units in this second: the partition's limit
        current = await table.renew(current) or current
    with pytest.raises(Exception, match="ProvisionedThroughputExceeded"):
        await table.renew(current)
    await asyncio.sleep(1.0)  # the next second has room again
    assert await table.renew(current) is not None


def test_big_scans_are_paged() -> None:
    assert PAGE_BYTES == 1024 * 1024


@pytest.mark.timeout(120)
def test_the_simulation_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--shards", "24", "--workers", "4", "--steady", "10", "--rolling", "1"]) == 0
    printed = capsys.readouterr().out
    for scenario in ("cold start", "steady 10 s", "SIGKILL", "rolling restart", "throttled"):
        assert scenario in printed
    assert "| telemax | kcl |" in printed
