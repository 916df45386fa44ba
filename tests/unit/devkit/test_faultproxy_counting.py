"""The fault proxy's count of DynamoDB items per table (devkit.faultproxy.items_by_table)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devkit.faultproxy import items_by_table


@pytest.mark.parametrize(
    ("operation", "request_body", "status", "answer", "expected"),
    [
        pytest.param(
            "Scan",
            {"TableName": "leases"},
            200,
            {"Count": 3, "ScannedCount": 5, "Items": []},
            {"leases": 5},
            id="scan-counts-what-was-read",
        ),
        pytest.param(
            "GetItem", {"TableName": "leases"}, 200, {"Item": {}}, {"leases": 1}, id="get-found"
        ),
        pytest.param("GetItem", {"TableName": "leases"}, 200, {}, {"leases": 0}, id="get-none"),
        pytest.param(
            "UpdateItem",
            {"TableName": "leases"},
            400,
            {"__type": "ConditionalCheckFailedException"},
            {"leases": 1},
            id="failed-condition-still-a-write",
        ),
        pytest.param(
            "BatchWriteItem",
            {"RequestItems": {"TELEMAX": [{}, {}], "dlq": [{}]}},
            200,
            {"UnprocessedItems": {}},
            {"TELEMAX": 2, "dlq": 1},
            id="batch-write-per-table",
        ),
        pytest.param("Scan", {"TableName": "leases"}, 400, {}, {"leases": 0}, id="throttled-read"),
        pytest.param("DescribeTable", {"TableName": "t"}, 200, {}, {"t": 0}, id="control-plane"),
    ],
)
def test_items_by_table(
    operation: str,
    request_body: dict[str, Any],
    status: int,
    answer: dict[str, Any],
    expected: dict[str, int],
) -> None:
    assert items_by_table(operation, request_body, status, orjson.dumps(answer)) == expected
