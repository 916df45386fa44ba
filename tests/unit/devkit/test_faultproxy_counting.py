"""The fault proxy's count of DynamoDB items per table (devkit.faultproxy.items_by_table)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from devkit.faultproxy import items_by_table, operation_of


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


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"X-Amz-Target": "DynamoDB_20120810.PutItem"}, b"{}", "PutItem"),
        ({"X-Amz-Target": "Kinesis_20131202.GetRecords"}, b"{}", "GetRecords"),
        ({}, b"Action=Publish&Version=2010-03-31&TopicArn=arn", "Publish"),
        ({}, b"Version=2012-11-05&Action=SendMessage&MessageBody=x", "SendMessage"),
        ({}, b"MessageBody=Action%3DPublish", "?"),  # a field's value names no operation
        ({}, b"", "?"),
    ],
)
def test_operation_of_json_and_query_requests(
    headers: dict[str, str], body: bytes, expected: str
) -> None:
    assert operation_of(headers, body) == expected
