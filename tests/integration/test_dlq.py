"""`consumer dlq list | replay` on moto's server: look at dead letters, fix, re-drive, twice."""

from __future__ import annotations

import orjson
import pytest

from tests.support import Stack, create_orders_table, readings, wait_until

pytestmark = pytest.mark.timeout(90)


def test_list_then_replay_after_a_fix_is_idempotent(stack: Stack) -> None:
    stack.setup(shards=1)
    good = readings(10)
    orphans = [
        {"Timestamp": f"2026-02-01T00:00:0{n}Z", "Data1": "LNK-9", "Data2": 1.5} for n in range(5)
    ]
    stack.put(good)
    stack.put([orjson.dumps(r) for r in orphans] + [b"not json", b"{oops"], key="x")
    worker = stack.worker("w1")
    wait_until(lambda: stack.count(stack.dlq_table) >= 7 and stack.count() >= 10, 45, "drained")
    assert worker.stop() == 0

    listed = stack.cli("consumer", "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "7 dead letters (missing_field 5, not_json 2)"
    assert lines[1].split()[:3] == ["shard", "sequence", "number"]
    assert len(lines) == 2 + 7
    only = stack.cli("consumer", "dlq", "list", "--reason", "not_json")
    assert only.stdout.splitlines()[0] == "2 dead letters (not_json 2)"

    fixed = stack.cli(
        "consumer",
        "dlq",
        "replay",
        "--reason",
        "missing_field",
        "--handler",
        "tests.handlers:lenient",
    )
    assert fixed.returncode == 0, fixed.stderr
    assert "replayed and removed from the dead-letter table: 5" in fixed.stdout
    assert stack.count(stack.dlq_table) == 2
    unknown = [i for i in stack.scan() if i["hardwareID"]["S"] == "unknown"]
    assert sorted(i["Timestamp"]["S"] for i in unknown) == [r["Timestamp"] for r in orphans]

    again = stack.cli("consumer", "dlq", "replay", "--handler", "tests.handlers:lenient")
    assert again.returncode == 0, again.stderr
    assert "replayed and removed from the dead-letter table: 0" in again.stdout
    assert "still failing (kept): 2 (not_json 2)" in again.stdout
    assert stack.count(stack.dlq_table) == 2
    assert stack.count() == 15


def test_replay_into_a_table_keyed_otherwise_than_the_handler_declares(stack: Stack) -> None:
    """The records table is keyed by (orderID), the handler declares (hardwareID, Timestamp):
    replay stops before touching anything, with one line."""
    stack.setup(shards=1)
    orders = create_orders_table(stack.dynamodb, f"orders-{stack.table}")
    letter = {
        "shardId": {"S": "shardId-000000000000"},
        "position": {"S": "00000000000000000000000000000000000000000000000000001:0000000000"},
        "sequenceNumber": {"S": "1"},
        "reason": {"S": "rejected_by_dynamodb"},
        "data": {"B": orjson.dumps(readings(1)[0])},  # a valid reading: it could be written
    }
    stack.dynamodb.put_item(TableName=stack.dlq_table, Item=letter)

    done = stack.cli("consumer", "dlq", "replay", TELEMAX_TABLE=orders)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "telemax-consumer: error: TELEMAX_HANDLER consumer.feeds.telemax:to_item declares key"
        f" (hardwareID, Timestamp) but table '{orders}' is keyed by (orderID)\n"
    )
    assert stack.count(stack.dlq_table) == 1
    assert stack.count(orders) == 0
