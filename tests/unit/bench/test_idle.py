"""tests.bench.idle's report: a quiet shard's cost is the slope between two shard counts."""

from __future__ import annotations

import pytest

from tests.bench.idle import IdleResult, report

pytestmark = pytest.mark.timeout(30)


def result(shards: int, cpu_ms_per_s: float, startup_cpu_s: float) -> IdleResult:
    return IdleResult(shards, cpu_ms_per_s, [0.4, 0.6], startup_cpu_s)


def test_the_slope_between_the_fewest_and_the_most_shards_in_any_order() -> None:
    table = report([result(64, 20.0, 0.30), result(4, 8.0, 0.18)])
    assert "| 4 shards | 8.00 | 0.50 s / 0.60 s | 0.18 |" in table
    assert "| CPU of one quiet shard (the slope), ms per second | 0.200 | ≤ 0.2 |" in table
    assert "| CPU to take one more shard at start-up, ms | 2.0 | |" in table
    assert "| first record after a quiet spell, worst | 0.60 s | ≤ 1 s |" in table


def test_one_shard_count_has_its_table_and_no_slope() -> None:
    table = report([result(4, 7.0, 0.16)])
    assert "| 4 shards | 7.00 |" in table
    assert "slope" not in table and "one more shard" not in table
    assert "| first record after a quiet spell, worst | 0.60 s | ≤ 1 s |" in table
