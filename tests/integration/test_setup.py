"""`consumer setup` on moto's server: creates everything once, then reports it exists."""

from __future__ import annotations

import pytest

from tests.support import Stack

pytestmark = pytest.mark.timeout(60)


def test_setup_creates_then_reports_existing(stack: Stack) -> None:
    first = stack.cli("consumer", "setup", TELEMAX_SHARDS="3")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 5, first.stdout
    assert f"stream {stack.stream} (3 shards)" in first.stdout

    second = stack.cli("consumer", "setup", TELEMAX_SHARDS="3")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("exists") == 5 and "created" not in second.stdout, second.stdout

    summary = stack.kinesis.describe_stream_summary(StreamName=stack.stream)
    assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 3
    schema = stack.dynamodb.describe_table(TableName=stack.table)["Table"]["KeySchema"]
    assert [(k["AttributeName"], k["KeyType"]) for k in schema] == [
        ("hardwareID", "HASH"),
        ("Timestamp", "RANGE"),
    ]
    members = stack.dynamodb.describe_table(TableName=stack.member_table)["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in members["KeySchema"]] == [
        ("workerId", "HASH")
    ]
    for table in (stack.lease_table, stack.member_table, stack.dlq_table):
        assert stack.dynamodb.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"


def test_setup_refuses_a_table_with_another_key_schema(stack: Stack) -> None:
    stack.dynamodb.create_table(
        TableName=stack.table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    done = stack.cli("consumer", "setup")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "key schema" in lines[0] and stack.table in lines[0], done.stderr
