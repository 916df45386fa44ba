"""The lean path's control calls answer as botocore's do, on moto over HTTP: GetShardIterator
for every iterator type (both iterators read the same records), and the lease tables' item
calls (the same items, binary attributes as bytes, the same error codes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from consumer.shard.reader import iterator_request
from kernel.aws import Clients, open_clients
from tests.support import Stack, lean_path

pytestmark = pytest.mark.timeout(60)
SHARD = "shardId-000000000000"


@pytest.fixture
async def clients(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Clients]:
    stack.setup(shards=1)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    async with open_clients() as opened:
        yield opened


async def read_all(clients: Clients, iterator: str) -> list[str]:
    answer = await clients.kinesis.get_records(ShardIterator=iterator, Limit=100)
    return [record["SequenceNumber"] for record in answer["Records"]]


async def test_every_iterator_type_reads_what_botocores_reads(
    clients: Clients, stack: Stack
) -> None:
    sequence = []
    for n in range(3):
        put = await clients.kinesis.put_record(
            StreamName=stack.stream, Data=b"%d" % n, PartitionKey="k"
        )
        sequence.append(put["SequenceNumber"])
    await asyncio.sleep(1.1)  # whole seconds between the timestamps
    after = datetime.now(UTC)
    await asyncio.sleep(0.1)
    put = await clients.kinesis.put_record(StreamName=stack.stream, Data=b"3", PartitionKey="k")
    sequence.append(put["SequenceNumber"])
    async with lean_path(clients) as fast:
        requests = {
            "trim-horizon": iterator_request("TRIM_HORIZON", None),
            "at-sequence": iterator_request(sequence[1], None, at=True),
            "after-sequence": iterator_request(sequence[1], None),
            "at-timestamp": iterator_request("AT_TIMESTAMP", after),
        }
        expected = {
            "trim-horizon": sequence,
            "at-sequence": sequence[1:],
            "after-sequence": sequence[2:],
            "at-timestamp": sequence[3:],
        }
        for name, request in requests.items():
            ours = await fast.kinesis.get_shard_iterator(stack.stream, SHARD, request)
            theirs = await clients.kinesis.get_shard_iterator(
                StreamName=stack.stream, ShardId=SHARD, **request
            )
            assert await read_all(clients, ours) == expected[name], name
            assert await read_all(clients, theirs["ShardIterator"]) == expected[name], name
        with pytest.raises(ClientError) as refused:
            await fast.kinesis.get_shard_iterator(
                stack.stream, "shardId-000000000009", requests["trim-horizon"]
            )
        assert refused.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_item_calls_answer_as_botocores(clients: Clients, stack: Stack) -> None:
    item = {
        "leaseKey": {"S": "k"},
        "leaseCounter": {"N": "7"},
        "parentShardId": {"SS": ["a", "b"]},
        "pendingCheckpointState": {"B": b"\x00\xffstate"},
        "blobs": {"BS": [b"\x01", b"\x02"]},
        "flag": {"BOOL": True},
    }
    async with lean_path(clients) as fast:
        items = fast.items(clients.dynamodb)
        await items.put_item(TableName=stack.lease_table, Item=item)
        key = {"leaseKey": {"S": "k"}}
        ours = await items.get_item(TableName=stack.lease_table, Key=key, ConsistentRead=True)
        theirs = await clients.dynamodb.get_item(
            TableName=stack.lease_table, Key=key, ConsistentRead=True
        )
        assert ours["Item"] == theirs["Item"] == item
        scanned = await items.scan(TableName=stack.lease_table, ConsistentRead=True)
        assert scanned["Items"] == [item]
        updated = await items.update_item(
            TableName=stack.lease_table,
            Key=key,
            UpdateExpression="SET leaseCounter = :next",
            ConditionExpression="leaseCounter = :seen",
            ExpressionAttributeValues={":seen": {"N": "7"}, ":next": {"N": "8"}},
            ReturnValues="ALL_NEW",
        )
        assert updated["Attributes"] == {**item, "leaseCounter": {"N": "8"}}
        with pytest.raises(ClientError) as lost:
            await items.delete_item(
                TableName=stack.lease_table,
                Key=key,
                ConditionExpression="leaseCounter = :seen",
                ExpressionAttributeValues={":seen": {"N": "7"}},
            )
        assert lost.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
        # anything but an item call goes to the generic client
        described = await items.describe_table(TableName=stack.lease_table)
        assert described["Table"]["TableName"] == stack.lease_table
