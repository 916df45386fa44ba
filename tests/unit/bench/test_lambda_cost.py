"""tests.bench.lambda_cost's report: each path's medians side by side, and their ratio."""

from __future__ import annotations

import pytest

from tests.bench.lambda_cost import Invocations, event, report

pytestmark = pytest.mark.timeout(30)


def test_the_medians_of_each_path_side_by_side_with_lean_over_aiobotocore() -> None:
    runs = [
        Invocations("lean", 0.11, 0.013, 12.0),
        Invocations("aiobotocore", 0.13, 0.35, 100.0),
        Invocations("lean", 0.12, 0.015, 14.0),
        Invocations("aiobotocore", 0.15, 0.45, 120.0),
        Invocations("lean", 0.30, 0.011, 13.0),
        Invocations("aiobotocore", 0.14, 0.40, 110.0),
    ]
    table = report(runs).splitlines()
    assert table[0] == "| | lean (default) | aiobotocore | lean / aiobotocore |"
    assert table[2] == "| imports, CPU-s | 0.12 | 0.14 | 0.86x |"
    assert table[3].endswith("| 0.013 | 0.400 | 0.03x |")
    assert table[4] == "| warm invocations, CPU µs per record | 13.0 | 110.0 | 0.12x |"


def test_an_event_is_as_the_event_source_mapping_delivers_it() -> None:
    reading = {"hardwareID": "HW-000001", "Timestamp": "2026-12-07T00:00:00Z"}
    (record,) = event([reading], 42)["Records"]
    assert record["eventID"] == f"shardId-000000000000:{42:056d}"
    assert record["kinesis"]["partitionKey"] == "HW-000001"
    assert record["kinesis"]["sequenceNumber"] == f"{42:056d}"
