"""A lease table written by a KCL 2.x application is adopted: its checkpoints are honoured,
its extra attributes kept, and nothing before the checkpoints is read again."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.support import Stack, keys_of, readings, wait_until

pytestmark = pytest.mark.timeout(90)


def records_of(stack: Stack, shard_id: str) -> list[dict[str, Any]]:
    iterator = stack.kinesis.get_shard_iterator(
        StreamName=stack.stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = stack.kinesis.get_records(ShardIterator=iterator, Limit=10_000)[
        "Records"
    ]
    return records


def test_worker_resumes_from_kcl_checkpoints(stack: Stack) -> None:
    stack.setup(shards=2)
    produced = readings(400)
    stack.put(produced)
    expected: set[tuple[str, str]] = set()
    for n, shard in enumerate(stack.kinesis.list_shards(StreamName=stack.stream)["Shards"]):
        records = records_of(stack, shard["ShardId"])
        done = len(records) // 2  # the KCL application got halfway through this shard
        item: dict[str, Any] = {
            "leaseKey": {"S": shard["ShardId"]},
            "leaseOwner": {"S": f"kcl-worker-{n}"},  # a KCL worker that is gone
            "leaseCounter": {"N": "41"},
            "checkpoint": {"S": records[done - 1]["SequenceNumber"]},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "2"},
            "startingHashKey": {"S": shard["HashKeyRange"]["StartingHashKey"]},
            "endingHashKey": {"S": shard["HashKeyRange"]["EndingHashKey"]},
        }
        stack.dynamodb.put_item(TableName=stack.lease_table, Item=item)
        for record in records[done:]:
            reading = orjson.loads(record["Data"])
            expected.add((reading["hardwareID"], reading["Timestamp"]))

    worker = stack.worker("adopter")
    wait_until(lambda: stack.count() >= len(expected), 45, "the unprocessed half stored")
    assert keys_of(stack.scan()) == expected, "exactly the records after the KCL checkpoints"
    received = wait_until(
        lambda: worker.metrics().get("telemax_records_received_total"), 10, "metrics"
    )
    # Reading resumes *at* each checkpoint, as the KCL's does: the checkpointed record itself
    # comes back once per shard (and is not stored again); nothing before it is read.
    assert received == len(expected) + 2, "nothing before a checkpoint is read again"
    assert worker.stop() == 0

    for lease in stack.leases().values():
        assert "leaseOwner" not in lease, "released on shutdown"
        assert int(lease["leaseCounter"]["N"]) > 41
        assert lease["checkpoint"]["S"].isdigit()
        assert "startingHashKey" in lease and "endingHashKey" in lease, "KCL attributes kept"
